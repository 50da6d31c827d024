package token_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/healthcode/healthcode/token"
)

func TestSignerWritesOnlyAlgAndKid(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := token.NewSigner("abcd", priv)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Sign(token.Claims{Colour: "g", NotBefore: 3600, Expires: 7200, Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %s", tok)
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if string(h) != `{"alg":"EdDSA","kid":"abcd"}` {
		t.Fatalf("header %s", h)
	}
	var c token.Claims
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(p, &c); err != nil {
		t.Fatal(err)
	}
	if n, err := base64.RawURLEncoding.DecodeString(c.Nonce); err != nil || len(n) != token.NonceBytes {
		t.Fatalf("nonce %q: %v", c.Nonce, err)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), []byte(parts[0]+"."+parts[1]), sig) {
		t.Fatal("signature does not verify")
	}
	again, _ := s.Sign(token.Claims{Colour: "g", NotBefore: 3600, Expires: 7200, Version: 1})
	if again == tok {
		t.Fatal("two copies are identical: the nonce must differ")
	}
}

func TestNewSignerRefusesBadInput(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := token.NewSigner("", priv); err == nil || err.Error() != "token: empty key id" {
		t.Fatalf("empty kid: %v", err)
	}
	if _, err := token.NewSigner("abcd", priv[:10]); err == nil || err.Error() != "token: not an Ed25519 private key" {
		t.Fatalf("short key: %v", err)
	}
}

func TestKeyIDIsShortAndStable(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	a, b := token.KeyID(pub), token.KeyID(pub)
	if a != b || len(a) != 4 {
		t.Fatalf("kid %q then %q", a, b)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if token.KeyID(other) == a {
		t.Fatalf("two random keys share kid %q (1 in 16M: rerun; persistent means a bug)", a)
	}
}
