package bundle

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)

// testBundle is issued at t0, stale a day later, expired a week later.
func testBundle(tokenKey ed25519.PublicKey) *Bundle {
	return &Bundle{
		Sequence:   7,
		IssuedAt:   t0.Unix(),
		StaleAfter: t0.Add(24 * time.Hour).Unix(),
		Expires:    t0.Add(7 * 24 * time.Hour).Unix(),
		Keys: []Key{{ID: "k1", Public: tokenKey, NotBefore: t0.Add(-24 * time.Hour).Unix(),
			NotAfter: t0.Add(30 * 24 * time.Hour).Unix(), Status: StatusCurrent}},
		Policy: Display{Version: 3, SkewSeconds: 300, GranularitySeconds: 3600,
			Lifetime: Lifetimes{Green: 24 * 3600, Yellow: 12 * 3600, Red: 6 * 3600}},
	}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signed(t *testing.T, b *Bundle, k ed25519.PrivateKey) string {
	t.Helper()
	raw, err := Sign(b, k)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func pinOf(k ed25519.PrivateKey) string { return Fingerprint(k.Public().(ed25519.PublicKey)) }

func TestAcceptRoundTrip(t *testing.T) {
	k := newKey(t)
	want := testBundle(newKey(t).Public().(ed25519.PublicKey))
	got, err := Accept(signed(t, want, k), pinOf(k), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("got %s, want %s", b, a)
	}
	// Pins are hex; either case names the same key.
	if _, err := Open(signed(t, want, k), pinOf(k)[:7]+strings.ToUpper(pinOf(k)[7:])); err != nil {
		t.Fatalf("upper-case hex pin: %v", err)
	}
}

// A verifier holding sequence n refuses n-1, takes n again (a re-download)
// and n+1.
func TestAcceptRefusesRollback(t *testing.T) {
	k := newKey(t)
	tk := newKey(t).Public().(ed25519.PublicKey)
	held := testBundle(tk)
	for _, tc := range []struct {
		seq  uint64
		want error
	}{{6, ErrRollback}, {0, ErrRollback}, {7, nil}, {8, nil}} {
		b := testBundle(tk)
		b.Sequence = tc.seq
		got, err := Accept(signed(t, b, k), pinOf(k), held, t0.Add(time.Hour))
		if !errors.Is(err, tc.want) {
			t.Fatalf("seq %d after 7: %v, want %v", tc.seq, err, tc.want)
		}
		if tc.want != nil {
			if got != nil {
				t.Fatalf("seq %d: refusal returned a bundle", tc.seq)
			}
			if want := "bundle is older than the one held: sequence " + itoa(tc.seq) + ", held 7"; err.Error() != want {
				t.Fatalf("message %q, want %q", err, want)
			}
		}
	}
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// A bundle signed by any key but the pinned one is refused before its
// signature or content count, even when it is well signed by its own key
// and names that key in its header.
func TestOpenRefusesUnpinnedKey(t *testing.T) {
	pinned, other := newKey(t), newKey(t)
	b := testBundle(newKey(t).Public().(ed25519.PublicKey))
	_, err := Open(signed(t, b, other), pinOf(pinned))
	if !errors.Is(err, ErrPin) {
		t.Fatalf("other key: %v, want ErrPin", err)
	}
	if !strings.Contains(err.Error(), pinOf(other)) || !strings.Contains(err.Error(), pinOf(pinned)) {
		t.Fatalf("message names neither key: %v", err)
	}

	// Header swapped to claim the pinned key, signature still by the other.
	raw := signed(t, b, other)
	parts := strings.Split(raw, ".")
	h, _ := json.Marshal(header{Alg: "EdDSA", BundleKey: base64.RawURLEncoding.EncodeToString(pinned.Public().(ed25519.PublicKey))})
	forged := base64.RawURLEncoding.EncodeToString(h) + "." + parts[1] + "." + parts[2]
	if _, err := Open(forged, pinOf(pinned)); !errors.Is(err, ErrSignature) {
		t.Fatalf("forged header: %v, want ErrSignature", err)
	}

	// One changed payload byte under the pinned key's header.
	p, _ := base64.RawURLEncoding.DecodeString(strings.Split(signed(t, b, pinned), ".")[1])
	p = []byte(strings.Replace(string(p), `"seq":7`, `"seq":9`, 1))
	good := strings.Split(signed(t, b, pinned), ".")
	tampered := good[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + good[2]
	if _, err := Open(tampered, pinOf(pinned)); !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered payload: %v, want ErrSignature", err)
	}

	for _, pin := range []string{"", "sha256:", "sha256:" + strings.Repeat("g", 64), "sha512:" + strings.Repeat("a", 64), pinOf(pinned)[:70]} {
		if _, err := Open(signed(t, b, pinned), pin); !errors.Is(err, ErrBadPinForm) {
			t.Fatalf("pin %q: %v, want ErrBadPinForm", pin, err)
		}
	}
}

// Fresh until StaleAfter, stale (warn, still used) until Expires, refused
// from Expires on, to the second.
func TestStaleAndExpired(t *testing.T) {
	k := newKey(t)
	b := testBundle(newKey(t).Public().(ed25519.PublicKey))
	raw := signed(t, b, k)
	stale, exp := time.Unix(b.StaleAfter, 0), time.Unix(b.Expires, 0)
	for _, tc := range []struct {
		at             time.Time
		stale, expired bool
	}{
		{t0, false, false},
		{stale.Add(-time.Second), false, false},
		{stale, true, false},
		{exp.Add(-time.Second), true, false},
		{exp, true, true},
		{exp.Add(365 * 24 * time.Hour), true, true},
	} {
		if got := b.Stale(tc.at); got != tc.stale {
			t.Fatalf("Stale(%v) = %v", tc.at, got)
		}
		got, err := Accept(raw, pinOf(k), nil, tc.at)
		if tc.expired {
			if !errors.Is(err, ErrExpired) || got != nil {
				t.Fatalf("Accept at %v: %v, want ErrExpired", tc.at, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Accept at %v: %v", tc.at, err)
		}
		if got.Stale(tc.at) != tc.stale {
			t.Fatalf("accepted bundle Stale(%v) = %v", tc.at, got.Stale(tc.at))
		}
	}
}

// Every field rule of Check, each with its message.
func TestCheck(t *testing.T) {
	pub := newKey(t).Public().(ed25519.PublicKey)
	for _, tc := range []struct {
		edit func(*Bundle)
		want string
	}{
		{func(b *Bundle) { b.IssuedAt = 0 }, "bundle: iat missing"},
		{func(b *Bundle) { b.Expires = b.IssuedAt }, "bundle: exp must be after iat"},
		{func(b *Bundle) { b.StaleAfter = b.Expires + 1 }, "bundle: stale must be between iat and exp"},
		{func(b *Bundle) { b.Keys = nil }, "bundle: no keys"},
		{func(b *Bundle) { b.Policy.SkewSeconds = -1 }, "bundle: negative skew"},
		{func(b *Bundle) { b.Keys[0].ID = "" }, "bundle: keys[0]: empty kid"},
		{func(b *Bundle) { b.Keys = append(b.Keys, b.Keys[0]) }, `bundle: keys[1]: duplicate kid "k1"`},
		{func(b *Bundle) { b.Keys[0].Public = pub[:31] }, "bundle: keys[0]: public key is 31 bytes, want 32"},
		{func(b *Bundle) { b.Keys[0].NotAfter = b.Keys[0].NotBefore }, "bundle: keys[0]: naf must be after nbf"},
		{func(b *Bundle) { b.Keys[0].Status = "revoked" }, `bundle: keys[0]: unknown status "revoked"`},
		{func(b *Bundle) { b.Policy.GranularitySeconds = 0 }, "bundle: policy granularity missing"},
		{func(b *Bundle) { b.Policy.GranularitySeconds = -60 }, "bundle: policy granularity missing"},
		{func(b *Bundle) { b.Policy.Lifetime.Green = 0 }, "bundle: policy token lifetimes missing"},
		{func(b *Bundle) { b.Policy.Lifetime.Yellow = -1 }, "bundle: policy token lifetimes missing"},
		{func(b *Bundle) { b.Policy.Lifetime.Red = 0 }, "bundle: policy token lifetimes missing"},
		{func(b *Bundle) { b.Withdrawn = []string{"k9", ""} }, "bundle: withdrawn[1]: empty kid"},
		{func(b *Bundle) { b.Withdrawn = []string{"k1"} }, `bundle: withdrawn[0]: kid "k1" is also in keys`},
		{func(b *Bundle) { b.Withdrawn = []string{"k9", "k8", "k9"} }, `bundle: withdrawn[2]: duplicate kid "k9"`},
		// A kid is echoed escaped: a signed bundle is still not text for a terminal.
		{func(b *Bundle) {
			b.Keys = append(b.Keys, b.Keys[0])
			b.Keys[0].ID = "k\x1b[2K"
			b.Keys[1].ID = b.Keys[0].ID
		},
			`bundle: keys[1]: duplicate kid "k\\x1b[2K"`},
	} {

		b := testBundle(pub)
		tc.edit(b)
		if err := b.Check(); err == nil || err.Error() != tc.want {
			t.Fatalf("got %v, want %q", err, tc.want)
		}
		if _, err := Sign(b, newKey(t)); err == nil || err.Error() != tc.want {
			t.Fatalf("Sign: got %v, want %q", err, tc.want)
		}
	}
}

// Open refuses unknown fields in the header and the payload: a newer
// issuer's field is not silently ignored by an older verifier.
func TestOpenIsStrict(t *testing.T) {
	k := newKey(t)
	pub := k.Public().(ed25519.PublicKey)
	hdr := `{"alg":"EdDSA","bk":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	p, _ := json.Marshal(testBundle(newKey(t).Public().(ed25519.PublicKey)))
	sign := func(h, p string) string {
		s := base64.RawURLEncoding.EncodeToString([]byte(h)) + "." + base64.RawURLEncoding.EncodeToString([]byte(p))
		return s + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(k, []byte(s)))
	}
	if _, err := Open(sign(hdr, string(p)), pinOf(k)); err != nil {
		t.Fatalf("hand-signed bundle: %v", err)
	}
	for name, raw := range map[string]string{
		"header field":  sign(strings.TrimSuffix(hdr, "}")+`,"x":1}`, string(p)),
		"payload field": sign(hdr, strings.TrimSuffix(string(p), "}")+`,"revoked":[]}`),
		"trailing data": sign(hdr, string(p)+`{}`),
		"two parts":     "a.b",
		"too long":      strings.Repeat("a", MaxLen+1),
	} {
		if _, err := Open(raw, pinOf(k)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Open(sign(`{"alg":"none","bk":"`+base64.RawURLEncoding.EncodeToString(pub)+`"}`, string(p)), pinOf(k)); !errors.Is(err, ErrSignature) {
		t.Fatalf("alg none: %v, want ErrSignature", err)
	}
}

// The caps and the withdrawn list survive signing and opening, and the
// helpers read them.
func TestCapsAndWithdrawnRoundTrip(t *testing.T) {
	k := newKey(t)
	b := testBundle(newKey(t).Public().(ed25519.PublicKey))
	b.Withdrawn = []string{"k0", "kz"}
	got, err := Open(signed(t, b, k), pinOf(k))
	if err != nil {
		t.Fatal(err)
	}
	if got.Policy != b.Policy {
		t.Fatalf("policy %+v, want %+v", got.Policy, b.Policy)
	}
	if !got.IsWithdrawn("k0") || !got.IsWithdrawn("kz") || got.IsWithdrawn("k1") {
		t.Fatalf("withdrawn %v", got.Withdrawn)
	}
	for code, want := range map[string]time.Duration{"g": 24 * time.Hour, "y": 12 * time.Hour, "r": 6 * time.Hour, "x": 0, "": 0} {
		if l := got.Policy.Lifetime.Of(code); l != want {
			t.Fatalf("Lifetime.Of(%q) = %v, want %v", code, l, want)
		}
	}
	if m := got.Policy.Lifetime.Max(); m != 24*time.Hour {
		t.Fatalf("Max = %v", m)
	}
	// A bundle without withdrawn keys says nothing of them on the wire.
	b.Withdrawn = nil
	p, _ := json.Marshal(b)
	if strings.Contains(string(p), "withdrawn") {
		t.Fatalf("empty withdrawn list serialised: %s", p)
	}
}
