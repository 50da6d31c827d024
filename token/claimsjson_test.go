package token

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// The hand-written claims encoding is byte for byte encoding/json's, for
// ordinary claims and for text encoding/json would escape.
func TestClaimsJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range []Claims{
		{Colour: "g", Expires: 1_800_003_600, Nonce: "AbC-_9", NotBefore: 1_800_000_000, Version: 3},
		{Colour: "r", Expires: -1, Hint: "AB 1990-x", Nonce: "n", NotBefore: 0, Version: 0},
		{Colour: `q"\`, Hint: "<script>&\u2028é\x01", Nonce: "\x7f"},
		{},
	} {
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Errorf("claims %+v:\n got %s\nwant %s", c, got, want)
		}
	}
}

// A token from Sign is the compact JWS golang-jwt makes of the same
// header and claims: same signing input, and Ed25519 is deterministic.
func TestSignIsTheJWTLibrarysToken(t *testing.T) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	s, err := NewSigner("k1", key)
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{Colour: "y", Expires: 1_800_003_600, Hint: "AB1990", Nonce: "AAAAAAAA", NotBefore: 1_800_000_000, Version: 7}
	got, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	delete(tok.Header, "typ")
	tok.Header["kid"] = "k1"
	want, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
