// Package bundle is the trust bundle: the issuer's token keys with their
// validity and the policy's display data, signed by a long-lived bundle key
// whose fingerprint verifiers pin (DESIGN §4). The signed form is a compact
// JWS whose header carries the bundle public key ("bk"); Open checks that
// key against the pin before it checks the signature.
package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/internal/clip"
)

// MaxLen bounds a signed bundle.
const MaxLen = 64 << 10

// Key is one token-signing public key. A token signed by it is valid only
// inside [NotBefore, NotAfter]; no token outlives its key.
type Key struct {
	ID        string `json:"kid"`
	Public    []byte `json:"pub"` // 32-byte Ed25519 public key (base64 in JSON)
	NotBefore int64  `json:"nbf"`
	NotAfter  int64  `json:"naf"`
	Status    string `json:"status"` // "current", "next" or "retired"
}

// Key statuses.
const (
	StatusCurrent = "current"
	StatusNext    = "next"
	StatusRetired = "retired"
)

// Display is the part of the policy a verifier needs. It stays comparable
// (the issuer compares it with == to decide whether to re-sign).
type Display struct {
	Version     int    `json:"version"`
	SkewSeconds int64  `json:"skew"`
	HolderHint  bool   `json:"hint"`
	Counting    bool   `json:"counting,omitempty"`
	Name        string `json:"name,omitempty"`
	// The caps on what a token key may mint: a token's window (exp - nbf)
	// is at most its colour's lifetime plus skew, and nbf and exp are
	// multiples of the granularity. Verifiers refuse anything else, so a
	// stolen key cannot make a month-long code.
	Lifetime           Lifetimes `json:"lifetime"`
	GranularitySeconds int64     `json:"granularity"`
}

// Lifetimes are the token lifetimes per colour, in seconds.
type Lifetimes struct {
	Green  int64 `json:"green"`
	Yellow int64 `json:"yellow"`
	Red    int64 `json:"red"`
}

// Of returns the lifetime of the colour whose token code is code ("g", "y",
// "r"), 0 for an unknown one.
func (l Lifetimes) Of(code string) time.Duration {
	var s int64
	switch code {
	case "g":
		s = l.Green
	case "y":
		s = l.Yellow
	case "r":
		s = l.Red
	}
	return time.Duration(s) * time.Second
}

// Max is the longest of the three.
func (l Lifetimes) Max() time.Duration {
	return time.Duration(max(l.Green, l.Yellow, l.Red)) * time.Second
}

// Bundle is what a verifier holds.
type Bundle struct {
	Sequence   uint64  `json:"seq"`
	IssuedAt   int64   `json:"iat"`
	StaleAfter int64   `json:"stale"` // refresh after this; verifiers warn
	Expires    int64   `json:"exp"`   // verifiers refuse after this
	Keys       []Key   `json:"keys"`
	Policy     Display `json:"policy"`
	// Withdrawn names revoked keys, kept until each key's own naf, so a
	// verifier can say why their tokens are refused. None is in Keys.
	Withdrawn []string `json:"withdrawn,omitempty"`
}

// Check validates the fields without regard to time.
func (b *Bundle) Check() error {
	switch {
	case b.IssuedAt <= 0:
		return errors.New("bundle: iat missing")
	case b.Expires <= b.IssuedAt:
		return errors.New("bundle: exp must be after iat")
	case b.StaleAfter < b.IssuedAt || b.StaleAfter > b.Expires:
		return errors.New("bundle: stale must be between iat and exp")
	case len(b.Keys) == 0:
		return errors.New("bundle: no keys")
	case b.Policy.SkewSeconds < 0:
		return errors.New("bundle: negative skew")
	case b.Policy.GranularitySeconds <= 0:
		return errors.New("bundle: policy granularity missing")
	case b.Policy.Lifetime.Green <= 0 || b.Policy.Lifetime.Yellow <= 0 || b.Policy.Lifetime.Red <= 0:
		return errors.New("bundle: policy token lifetimes missing")
	}
	seen := map[string]bool{}
	for i, k := range b.Keys {
		switch {
		case k.ID == "":
			return fmt.Errorf("bundle: keys[%d]: empty kid", i)
		case seen[k.ID]:
			return fmt.Errorf("bundle: keys[%d]: duplicate kid %q", i, clip.String(k.ID, 16))
		case len(k.Public) != ed25519.PublicKeySize:
			return fmt.Errorf("bundle: keys[%d]: public key is %d bytes, want %d", i, len(k.Public), ed25519.PublicKeySize)
		case k.NotAfter <= k.NotBefore:
			return fmt.Errorf("bundle: keys[%d]: naf must be after nbf", i)
		case k.Status != StatusCurrent && k.Status != StatusNext && k.Status != StatusRetired:
			return fmt.Errorf("bundle: keys[%d]: unknown status %q", i, k.Status)
		}
		seen[k.ID] = true
	}
	withdrawn := map[string]bool{}
	for i, id := range b.Withdrawn {
		switch {
		case id == "":
			return fmt.Errorf("bundle: withdrawn[%d]: empty kid", i)
		case seen[id]:
			return fmt.Errorf("bundle: withdrawn[%d]: kid %q is also in keys", i, clip.String(id, 16))
		case withdrawn[id]:
			return fmt.Errorf("bundle: withdrawn[%d]: duplicate kid %q", i, clip.String(id, 16))
		}
		withdrawn[id] = true
	}
	return nil
}

// IsWithdrawn reports whether kid names a revoked key.
func (b *Bundle) IsWithdrawn(kid string) bool {
	for _, id := range b.Withdrawn {
		if id == kid {
			return true
		}
	}
	return false
}

// Find returns the key named kid.
func (b *Bundle) Find(kid string) (Key, bool) {
	for _, k := range b.Keys {
		if k.ID == kid {
			return k, true
		}
	}
	return Key{}, false
}

// Skew is the clock-skew allowance.
func (b *Bundle) Skew() time.Duration { return time.Duration(b.Policy.SkewSeconds) * time.Second }

// Stale reports whether the bundle should be refreshed at now.
func (b *Bundle) Stale(now time.Time) bool { return now.Unix() >= b.StaleAfter }

// Expired reports whether the bundle must no longer be used at now.
func (b *Bundle) Expired(now time.Time) bool { return now.Unix() >= b.Expires }

// Fingerprint is what verifiers pin: "sha256:" and the lowercase hex SHA-256
// of the raw 32-byte bundle public key.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type header struct {
	Alg       string `json:"alg"`
	BundleKey string `json:"bk"`
}

// Sign returns the signed form of b.
func Sign(b *Bundle, key ed25519.PrivateKey) (string, error) {
	if err := b.Check(); err != nil {
		return "", err
	}
	pub := key.Public().(ed25519.PublicKey)
	h, err := json.Marshal(header{Alg: "EdDSA", BundleKey: base64.RawURLEncoding.EncodeToString(pub)})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(b)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	sig, err := jwt.SigningMethodEdDSA.Sign(signing, key)
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Errors from Open. Each is wrapped with detail.
var (
	ErrMalformed  = errors.New("bundle is malformed")
	ErrPin        = errors.New("bundle is not signed by the pinned key")
	ErrSignature  = errors.New("bundle signature does not verify")
	ErrExpired    = errors.New("bundle has expired")
	ErrRollback   = errors.New("bundle is older than the one held")
	ErrBadPinForm = errors.New("pin must be sha256: followed by 64 hex digits")
)

// CheckPin validates a pin's form.
func CheckPin(pin string) error {
	h, ok := strings.CutPrefix(pin, "sha256:")
	if !ok || len(h) != 64 {
		return ErrBadPinForm
	}
	if _, err := hex.DecodeString(h); err != nil {
		return ErrBadPinForm
	}
	return nil
}

// Open verifies raw under the pinned fingerprint and returns the bundle. It
// does not look at the time: callers decide between stale, expired and fine
// (see Bundle.Stale and Bundle.Expired).
func Open(raw, pin string) (*Bundle, error) {
	if err := CheckPin(pin); err != nil {
		return nil, err
	}
	raw = strings.TrimSpace(raw)
	if len(raw) > MaxLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLen)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var h header
	if err := strictUnmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if h.Alg != "EdDSA" {
		return nil, fmt.Errorf("%w: algorithm %q is not EdDSA", ErrSignature, clip.String(h.Alg, 16))
	}
	pub, err := base64.RawURLEncoding.DecodeString(h.BundleKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: header bk is not an Ed25519 public key", ErrMalformed)
	}
	if subtle.ConstantTimeCompare([]byte(Fingerprint(pub)), []byte(strings.ToLower(pin))) != 1 {
		return nil, fmt.Errorf("%w: key %s, pinned %s", ErrPin, Fingerprint(pub), pin)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, ErrSignature
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	var b Bundle
	if err := strictUnmarshal(pb, &b); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := b.Check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &b, nil
}

// Accept opens raw and applies the rules a verifier holding prev (nil if
// none) follows at now: no rollback, not expired.
func Accept(raw, pin string, prev *Bundle, now time.Time) (*Bundle, error) {
	b, err := Open(raw, pin)
	if err != nil {
		return nil, err
	}
	if prev != nil && b.Sequence < prev.Sequence {
		return nil, fmt.Errorf("%w: sequence %d, held %d", ErrRollback, b.Sequence, prev.Sequence)
	}
	if b.Expired(now) {
		return nil, fmt.Errorf("%w: at %s", ErrExpired, time.Unix(b.Expires, 0).UTC().Format(time.RFC3339))
	}
	return b, nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}
