package jsonw

import (
	"encoding/json"
	"testing"
)

func TestStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "eyJhbGciOiJFZERTQSJ9.e30.c2ln-_", `q"b\s`, "<a>&", "\x00\x1f\x7f", "é\u2028\u2029", "\xff bad utf-8"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := String([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("%q: got %s, want x%s", s, got, want)
		}
	}
}
