package verifier

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
)

// t0 is "now" in every test: time is injected, nothing sleeps.
var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

const skew = 300 * time.Second

// fixture is a real trust bundle (signed with bundle.Sign, opened under its
// pin) and the real token keys it names.
type fixture struct {
	bundleKey ed25519.PrivateKey
	pin       string
	raw       string         // signed bundle
	b         *bundle.Bundle // opened
	cur       *token.Signer  // current key, valid t0-30d .. t0+30d
	curKey    ed25519.PrivateKey
	short     *token.Signer // retired key, valid t0-30d .. t0+1h
	stranger  *token.Signer // a key the bundle does not hold
	revoked   *token.Signer // a key the bundle lists as withdrawn
}

func seedKey(n byte) ed25519.PrivateKey {
	var seed [ed25519.SeedSize]byte
	for i := range seed {
		seed[i] = n
	}
	return ed25519.NewKeyFromSeed(seed[:])
}

func newSigner(tb testing.TB, key ed25519.PrivateKey) *token.Signer {
	tb.Helper()
	s, err := token.NewSigner(token.KeyID(key.Public().(ed25519.PublicKey)), key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func newFixture(tb testing.TB, hint bool) *fixture {
	tb.Helper()
	f := &fixture{bundleKey: seedKey(1), curKey: seedKey(2)}
	f.cur = newSigner(tb, f.curKey)
	short := seedKey(3)
	f.short = newSigner(tb, short)
	f.stranger = newSigner(tb, seedKey(4))
	f.revoked = newSigner(tb, seedKey(5))
	f.pin = bundle.Fingerprint(f.bundleKey.Public().(ed25519.PublicKey))
	b := &bundle.Bundle{
		Sequence:   7,
		IssuedAt:   t0.Add(-time.Hour).Unix(),
		StaleAfter: t0.Add(24 * time.Hour).Unix(),
		Expires:    t0.Add(7 * 24 * time.Hour).Unix(),
		Keys: []bundle.Key{
			{ID: f.cur.KeyID(), Public: f.curKey.Public().(ed25519.PublicKey), NotBefore: t0.Add(-30 * 24 * time.Hour).Unix(), NotAfter: t0.Add(30 * 24 * time.Hour).Unix(), Status: bundle.StatusCurrent},
			{ID: f.short.KeyID(), Public: short.Public().(ed25519.PublicKey), NotBefore: t0.Add(-30 * 24 * time.Hour).Unix(), NotAfter: t0.Add(time.Hour).Unix(), Status: bundle.StatusRetired},
		},
		Policy: bundle.Display{Version: 3, SkewSeconds: int64(skew / time.Second), HolderHint: hint,
			Lifetime: bundle.Lifetimes{Green: 24 * 3600, Yellow: 12 * 3600, Red: 6 * 3600}, GranularitySeconds: 3600},
		Withdrawn: []string{f.revoked.KeyID()},
	}
	raw, err := bundle.Sign(b, f.bundleKey)
	if err != nil {
		tb.Fatal(err)
	}
	f.raw = raw
	if f.b, err = bundle.Open(raw, f.pin); err != nil {
		tb.Fatal(err)
	}
	return f
}

// claims are valid at t0: nbf t0-1h, exp t0+2h.
func validClaims(c policy.Colour) token.Claims {
	return token.Claims{Colour: c.Code(), NotBefore: t0.Add(-time.Hour).Unix(), Expires: t0.Add(2 * time.Hour).Unix(), Version: 3}
}

func sign(tb testing.TB, s *token.Signer, c token.Claims) string {
	tb.Helper()
	raw, err := s.Sign(c)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

var enc = base64.RawURLEncoding

// signRaw signs arbitrary header and payload JSON with EdDSA, for tokens the
// issuer's Signer would never make.
func signRaw(tb testing.TB, key ed25519.PrivateKey, header, payload string) string {
	tb.Helper()
	s := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodEdDSA.Sign(s, key)
	if err != nil {
		tb.Fatal(err)
	}
	return s + "." + enc.EncodeToString(sig)
}

// referenceVerify is Verify written with golang-jwt's parser, as the package
// comment describes. It is the yardstick for the benchmark and the oracle for
// the fuzz test: whatever Verify accepts, it must accept with the same result.
func referenceVerify(raw string, b *bundle.Bundle, now time.Time) (Result, error) {
	if len(raw) > token.MaxLen {
		return Result{}, ErrMalformed
	}
	if b.Expired(now) {
		return Result{}, ErrBundleExpired
	}
	p := jwt.NewParser(jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }), jwt.WithLeeway(b.Skew()), jwt.WithStrictDecoding())
	var key bundle.Key
	var c token.Claims
	tok, err := p.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := b.Find(kid)
		if !ok {
			return nil, ErrUnknownKey
		}
		key = k
		return ed25519.PublicKey(k.Public), nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Result{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if errors.Is(err, ErrUnknownKey) {
			return Result{}, ErrUnknownKey
		}
		return Result{}, fmt.Errorf("%w: %v", ErrAlgorithm, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if strings.Contains(err.Error(), "signing method") {
			return Result{}, ErrAlgorithm
		}
		return Result{}, ErrBadSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return Result{}, ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return Result{}, ErrNotYetValid
	default:
		return Result{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var all map[string]json.RawMessage
	pb, _ := enc.DecodeString(strings.Split(raw, ".")[1])
	if err := json.Unmarshal(pb, &all); err != nil {
		return Result{}, ErrMalformed
	}
	for name := range all {
		if !token.AllowedClaims[name] {
			return Result{}, ErrMalformed
		}
	}
	for _, name := range []string{"c", "exp", "n", "nbf", "v"} {
		if _, ok := all[name]; !ok {
			return Result{}, ErrMalformed
		}
	}
	colour, err := policy.ColourFromCode(c.Colour)
	if err != nil || c.Nonce == "" || c.NotBefore >= c.Expires || c.Version < 0 {
		return Result{}, ErrMalformed
	}
	if _, ok := all["h"]; ok && (c.Hint == "" || !b.Policy.HolderHint) {
		return Result{}, ErrMalformed
	}
	if _, ok := all["h"]; ok && attestation.CheckHint(c.Hint) != nil {
		return Result{}, ErrMalformed
	}
	if g := b.Policy.GranularitySeconds; c.NotBefore%g != 0 || c.Expires%g != 0 {
		return Result{}, ErrOffGrid
	}
	if time.Duration(c.Expires-c.NotBefore)*time.Second > b.Policy.Lifetime.Of(c.Colour)+b.Skew() {
		return Result{}, ErrWindowTooLong
	}
	if c.NotBefore < key.NotBefore || c.Expires > key.NotAfter {
		return Result{}, ErrKeyWindow
	}
	_ = tok
	return Result{
		Colour: colour, NotBefore: time.Unix(c.NotBefore, 0).UTC(), Expires: time.Unix(c.Expires, 0).UTC(),
		Hint: c.Hint, KeyID: key.ID, PolicyVersion: c.Version, BundleStale: b.Stale(now),
	}, nil
}
