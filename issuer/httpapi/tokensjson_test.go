package httpapi

import (
	"encoding/json"
	"testing"
)

// The hand-written batch answer is byte for byte encoding/json's, so the
// OpenAPI document and every client read the same body as before.
func TestTokensResponseJSONMatchesEncodingJSON(t *testing.T) {
	for _, r := range []TokensResponse{
		{Colour: "green", Tokens: []TokenJSON{{Token: "eyJhbGciOiJFZERTQSIsImtpZCI6ImFiY2QifQ.eyJjIjoiZyJ9.c2ln", NotBefore: 1_800_000_000, Expires: 1_800_003_600},
			{Token: "a.b.c", NotBefore: -5, Expires: 0}}, RenewAfter: 1_800_600_000, EvidenceUntil: 1_801_000_000},
		{Colour: "red", Tokens: []TokenJSON{}},
		{Colour: `<&"\>`, Tokens: nil, RenewAfter: -1},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.appendJSON(nil); string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}
