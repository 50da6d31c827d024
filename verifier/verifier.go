// Package verifier checks a colour token offline against a trust bundle
// (DESIGN §3 step 4). It never touches the network or the file system, so
// that the same code runs in the CLI, the kiosk and the browser (WebAssembly).
//
// Verify parses the compact JWS itself instead of using jwt.Parser: the
// parser's map decoding and reflection cost more than the 10% over a bare
// Ed25519 verification that venue scanning can afford (see bench_test.go),
// and it cannot see claims outside the struct. The semantics are the
// parser's with WithValidMethods(EdDSA), WithExpirationRequired, an injected
// time and WithLeeway(skew); the signature is checked by
// jwt.SigningMethodEdDSA. A differential test holds the two together.
package verifier

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
)

// Errors from Verify, each wrapped with detail; test with errors.Is. No
// detail ever holds the token, its nonce or its hint.
var (
	ErrMalformed      = errors.New("token is malformed")
	ErrBadSignature   = errors.New("token signature does not verify")
	ErrUnknownKey     = errors.New("token is signed by a key the bundle does not hold")
	ErrKeyWindow      = errors.New("token validity is outside its key's validity")
	ErrExpired        = errors.New("token has expired")
	ErrNotYetValid    = errors.New("token is not valid yet")
	ErrAlgorithm      = errors.New("token algorithm is not allowed")
	ErrBundleExpired  = errors.New("trust bundle has expired; sync a new one")
	ErrKeyWithdrawn   = errors.New("token is signed by a key the issuer has withdrawn")
	ErrWindowTooLong  = errors.New("token validity window is longer than the policy allows")
	ErrOffGrid        = errors.New("token times are off the policy's time grid")
	ErrLabAttestation = errors.New("this is a lab's attestation, not a health code; " +
		"the resident exchanges it for health codes in the wallet")
	ErrUnknownIssuer = errors.New("token is signed by a key this issuer never published")
)

// Reason codes, stable for scripts and the --json output.
const (
	ReasonMalformed      = "malformed"
	ReasonBadSignature   = "bad_signature"
	ReasonUnknownKey     = "unknown_key"
	ReasonKeyWindow      = "key_window"
	ReasonExpired        = "expired"
	ReasonNotYetValid    = "not_yet_valid"
	ReasonAlgorithm      = "algorithm_not_allowed"
	ReasonBundleExpired  = "bundle_expired"
	ReasonKeyWithdrawn   = "key_withdrawn"
	ReasonWindowTooLong  = "window_too_long"
	ReasonOffGrid        = "off_grid"
	ReasonLabAttestation = "lab_attestation"
	ReasonUnknownIssuer  = "unknown_issuer"
	ReasonInvalid        = "invalid" // an error that is none of the above
)

// Reason returns the stable short code for an error from Verify, "" for nil.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, ErrBadSignature):
		return ReasonBadSignature
	case errors.Is(err, ErrUnknownKey):
		return ReasonUnknownKey
	case errors.Is(err, ErrKeyWindow):
		return ReasonKeyWindow
	case errors.Is(err, ErrExpired):
		return ReasonExpired
	case errors.Is(err, ErrNotYetValid):
		return ReasonNotYetValid
	case errors.Is(err, ErrAlgorithm):
		return ReasonAlgorithm
	case errors.Is(err, ErrBundleExpired):
		return ReasonBundleExpired
	case errors.Is(err, ErrKeyWithdrawn):
		return ReasonKeyWithdrawn
	case errors.Is(err, ErrWindowTooLong):
		return ReasonWindowTooLong
	case errors.Is(err, ErrOffGrid):
		return ReasonOffGrid
	case errors.Is(err, ErrLabAttestation):
		return ReasonLabAttestation
	case errors.Is(err, ErrUnknownIssuer):
		return ReasonUnknownIssuer
	}
	return ReasonInvalid
}

// Result is what a venue may learn from a valid token, and nothing more.
type Result struct {
	Colour        policy.Colour
	NotBefore     time.Time // UTC
	Expires       time.Time // UTC
	Hint          string    // holder hint, "" unless the policy turns it on
	KeyID         string
	PolicyVersion int
	BundleStale   bool // the bundle should be refreshed; the result still holds
}

// sigLen is the base64url length of a 64-byte Ed25519 signature.
const sigLen = (ed25519.SignatureSize*8 + 5) / 6

var b64 = base64.RawURLEncoding.Strict()

// Verify checks raw at now against the trust bundle b. A nil error means the
// token is authentic under a key b holds (not one it lists as withdrawn),
// inside its window (with b's skew allowance), inside its key's window, and
// within b's caps (window length per colour, time grid); b must already
// have been opened under its pin.
func Verify(raw string, b *bundle.Bundle, now time.Time) (Result, error) {
	if len(raw) > token.MaxLen {
		return Result{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, token.MaxLen)
	}
	if b == nil {
		return Result{}, fmt.Errorf("%w: no bundle", ErrBundleExpired)
	}
	// Refuse rather than show any colour on keys nobody vouches for any more.
	if b.Expired(now) {
		return Result{}, fmt.Errorf("%w: expired %s", ErrBundleExpired, time.Unix(b.Expires, 0).UTC().Format(time.RFC3339))
	}

	d1, d2 := -1, -1
	for i := 0; i < len(raw); i++ {
		if raw[i] == '.' {
			switch {
			case d1 < 0:
				d1 = i
			case d2 < 0:
				d2 = i
			default:
				return Result{}, fmt.Errorf("%w: not a compact JWS (more than three parts)", ErrMalformed)
			}
		}
	}
	if d2 < 0 {
		return Result{}, fmt.Errorf("%w: not a compact JWS (fewer than three parts)", ErrMalformed)
	}

	// One stack copy of the input; everything below decodes into fixed
	// buffers, so a valid token costs almost no allocation.
	var in [token.MaxLen]byte
	n := copy(in[:], raw)
	src := in[:n]

	var hbuf, pbuf [token.MaxLen * 3 / 4]byte
	hn, err := b64.Decode(hbuf[:], src[:d1])
	if err != nil {
		return Result{}, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	alg, kid, err := readHeader(hbuf[:hn])
	if err != nil {
		if isAttestation(src[d1+1 : d2]) {
			return Result{}, ErrLabAttestation
		}
		return Result{}, err
	}
	if string(alg) != "EdDSA" {
		return Result{}, fmt.Errorf("%w: %q (only EdDSA)", ErrAlgorithm, clipped(alg))
	}
	if b.IsWithdrawn(string(kid)) {
		return Result{}, fmt.Errorf("%w: kid %q was revoked; its tokens are no longer honoured", ErrKeyWithdrawn, clipped(kid))
	}
	key, ok := find(b, kid)
	if !ok {
		return Result{}, unknownKey(src[d1+1:d2], kid, b)
	}

	if n-d2-1 != sigLen {
		return Result{}, fmt.Errorf("%w: signature is not %d bytes", ErrMalformed, ed25519.SignatureSize)
	}
	var sig [ed25519.SignatureSize + 2]byte // room for Decode's last quantum
	if sn, err := b64.Decode(sig[:], src[d2+1:]); err != nil || sn != ed25519.SignatureSize {
		return Result{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	// golang-jwt checks the signature: it insists on an ed25519.PublicKey
	// value, which is what the bundle's 32 bytes are.
	if err := jwt.SigningMethodEdDSA.Verify(raw[:d2], sig[:ed25519.SignatureSize], ed25519.PublicKey(key.Public)); err != nil {
		if errors.Is(err, jwt.ErrEd25519Verification) {
			return Result{}, ErrBadSignature
		}
		return Result{}, fmt.Errorf("%w: kid %q: %v", ErrUnknownKey, key.ID, err)
	}

	// Only authenticated bytes from here on.
	pn, err := b64.Decode(pbuf[:], src[d1+1:d2])
	if err != nil {
		return Result{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	c, err := readClaims(pbuf[:pn])
	if err != nil {
		return Result{}, err
	}
	colour, err := policy.ColourFromCode(c.colour)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.hasHint && !b.Policy.HolderHint {
		// The policy says tokens carry no hint; one that does was made
		// under other rules, and showing it would leak more than allowed.
		return Result{}, fmt.Errorf("%w: token carries a holder hint but the policy has hints off", ErrMalformed)
	}
	if err := capped(c, b); err != nil {
		return Result{}, err
	}

	// The parser's rules: valid while now < exp+skew and now >= nbf-skew.
	skew := b.Skew()
	nbf, exp := time.Unix(c.nbf, 0).UTC(), time.Unix(c.exp, 0).UTC()
	if !now.Before(exp.Add(skew)) {
		return Result{}, fmt.Errorf("%w: at %s", ErrExpired, exp.Format(time.RFC3339))
	}
	if now.Before(nbf.Add(-skew)) {
		return Result{}, fmt.Errorf("%w: from %s", ErrNotYetValid, nbf.Format(time.RFC3339))
	}
	// No token outlives its key (nor predates it).
	if c.nbf < key.NotBefore || c.exp > key.NotAfter {
		return Result{}, fmt.Errorf("%w: kid %q valid %s to %s", ErrKeyWindow, key.ID,
			time.Unix(key.NotBefore, 0).UTC().Format(time.RFC3339), time.Unix(key.NotAfter, 0).UTC().Format(time.RFC3339))
	}

	return Result{
		Colour:        colour,
		NotBefore:     nbf,
		Expires:       exp,
		Hint:          c.hint,
		KeyID:         key.ID,
		PolicyVersion: c.version,
		BundleStale:   b.Stale(now),
	}, nil
}

// find is bundle.Find without converting kid to a string.
func find(b *bundle.Bundle, kid []byte) (bundle.Key, bool) {
	for _, k := range b.Keys {
		if k.ID == string(kid) {
			return k, true
		}
	}
	return bundle.Key{}, false
}

// readHeader reads {"alg":..,"kid":..}; "typ" is tolerated because other
// JWT libraries add it, any other member is refused.
func readHeader(h []byte) (alg, kid []byte, err error) {
	r := objectReader{b: h}
	if err := r.open(); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	var seenAlg, seenKid, seenTyp bool
	for {
		k, v, done, err := r.next()
		if err != nil {
			if k != nil && string(k) != "alg" && string(k) != "kid" && string(k) != "typ" {
				// crit, jku and the like, whatever their value.
				return nil, nil, fmt.Errorf("%w: header member %q is not allowed", ErrMalformed, clipped(k))
			}
			return nil, nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
		}
		if done {
			break
		}
		var seen *bool
		switch string(k) {
		case "alg":
			seen, alg = &seenAlg, v.raw
		case "kid":
			seen, kid = &seenKid, v.raw
		case "typ":
			seen = &seenTyp
		default:
			return nil, nil, fmt.Errorf("%w: header member %q is not allowed", ErrMalformed, clipped(k))
		}
		if *seen {
			return nil, nil, fmt.Errorf("%w: header member %q appears twice", ErrMalformed, clipped(k))
		}
		*seen = true
		if !v.isString || v.escaped {
			return nil, nil, fmt.Errorf("%w: header member %q must be a plain string", ErrMalformed, clipped(k))
		}
	}
	switch {
	case !seenAlg:
		return nil, nil, fmt.Errorf("%w: header has no alg", ErrAlgorithm)
	case !seenKid || len(kid) == 0:
		return nil, nil, fmt.Errorf("%w: header has no kid", ErrMalformed)
	}
	return alg, kid, nil
}

type claims struct {
	colour  string
	exp     int64
	hint    string
	hasHint bool
	nonce   bool
	nbf     int64
	version int
}

// readClaims reads the token claims: every one of token.AllowedClaims but h
// is required, each exactly once, nothing else allowed.
func readClaims(p []byte) (claims, error) {
	var c claims
	r := objectReader{b: p}
	if err := r.open(); err != nil {
		return c, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	var seen [6]bool // c, exp, h, n, nbf, v
	for {
		k, v, done, err := r.next()
		if err != nil {
			if k != nil {
				return c, fmt.Errorf("%w: claim %q: %v", ErrMalformed, clipped(k), err)
			}
			return c, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
		}
		if done {
			break
		}
		if !token.AllowedClaims[string(k)] {
			return c, fmt.Errorf("%w: claim %q is not allowed", ErrMalformed, clipped(k))
		}
		var idx int
		wantString := true
		switch string(k) {
		case "c":
			idx = 0
		case "exp":
			idx, wantString = 1, false
		case "h":
			idx = 2
		case "n":
			idx = 3
		case "nbf":
			idx, wantString = 4, false
		case "v":
			idx, wantString = 5, false
		default:
			// In token.AllowedClaims but unknown here: refuse rather than
			// accept what this verifier cannot judge.
			return c, fmt.Errorf("%w: claim %q is not understood by this verifier", ErrMalformed, clipped(k))
		}
		if seen[idx] {
			return c, fmt.Errorf("%w: claim %q appears twice", ErrMalformed, clipped(k))
		}
		seen[idx] = true
		if v.isString != wantString {
			kind := "an integer"
			if wantString {
				kind = "a string"
			}
			return c, fmt.Errorf("%w: claim %q must be %s", ErrMalformed, clipped(k), kind)
		}
		switch idx {
		case 0:
			if c.colour, err = v.str(); err != nil {
				return c, fmt.Errorf("%w: claim \"c\": %v", ErrMalformed, err)
			}
		case 1:
			c.exp = v.num
		case 2:
			if c.hint, err = v.str(); err != nil {
				return c, fmt.Errorf("%w: claim \"h\": %v", ErrMalformed, err)
			}
			if c.hint == "" {
				return c, fmt.Errorf("%w: claim \"h\" is empty", ErrMalformed)
			}
			if err := attestation.CheckHint(c.hint); err != nil {
				// The issuer never signs such a hint; printed at the door
				// it could pose as a verdict.
				return c, fmt.Errorf("%w: claim \"h\": %v", ErrMalformed, err)
			}
			c.hasHint = true
		case 3:
			if len(v.raw) == 0 {
				return c, fmt.Errorf("%w: claim \"n\" is empty", ErrMalformed)
			}
			c.nonce = true
		case 4:
			c.nbf = v.num
		case 5:
			if v.num < 0 || v.num > 1<<31-1 {
				return c, fmt.Errorf("%w: claim \"v\" out of range", ErrMalformed)
			}
			c.version = int(v.num)
		}
	}
	for i, name := range [6]string{"c", "exp", "h", "n", "nbf", "v"} {
		if !seen[i] && name != "h" {
			return c, fmt.Errorf("%w: claim %q is missing", ErrMalformed, name)
		}
	}
	if c.nbf >= c.exp {
		return c, fmt.Errorf("%w: nbf is not before exp", ErrMalformed)
	}
	return c, nil
}

// clipped bounds attacker-chosen text quoted in an error and escapes what
// a terminal would act on.
func clipped(b []byte) string { return clip.String(string(b), 16) }

// capped applies the bundle's caps: the window is at most the colour's
// lifetime plus skew, and both ends lie on the granularity's grid. The
// issuer never mints anything else, so a token outside them was made with a
// stolen key or under another issuer's rules. A policy change that shortens
// lifetimes or coarsens the grid refuses the older tokens too, for at most
// one old lifetime.
func capped(c claims, b *bundle.Bundle) error {
	g := b.Policy.GranularitySeconds
	if g <= 0 { // only a bundle that was never opened gets here
		return fmt.Errorf("%w: the bundle sets no granularity", ErrOffGrid)
	}
	if c.nbf%g != 0 || c.exp%g != 0 {
		return fmt.Errorf("%w: nbf %s and exp %s must be multiples of %s", ErrOffGrid,
			fmtUnix(c.nbf), fmtUnix(c.exp), time.Duration(g)*time.Second)
	}
	life := b.Policy.Lifetime.Of(c.colour)
	if life <= 0 {
		return fmt.Errorf("%w: the bundle sets no lifetime for colour %q", ErrWindowTooLong, clip.String(c.colour, 4))
	}
	// exp > nbf (readClaims), so the unsigned difference is exact even
	// where exp - nbf overflows int64.
	window := uint64(c.exp) - uint64(c.nbf)
	if limit := uint64((life + b.Skew()) / time.Second); window > limit {
		return fmt.Errorf("%w: %s from nbf to exp, at most %s for this colour (plus %s skew)", ErrWindowTooLong,
			fmtWindow(window), life, b.Skew())
	}
	return nil
}

func fmtUnix(s int64) string { return time.Unix(s, 0).UTC().Format(time.RFC3339) }

func fmtWindow(s uint64) string {
	if s > uint64(1<<63-1)/uint64(time.Second) {
		return "more than 292 years"
	}
	return (time.Duration(s) * time.Second).String()
}

// unknownKey names why kid is not in the bundle, from the token's claims
// (not authenticated, so they only choose the words). A token whose window
// began a full lifetime and a granule before the bundle's issue time, and
// was still valid then, was signed by a key that was already signing before
// the bundle was made (a key's window starts at most a lifetime and a
// granule before it signs): had that key been this issuer's, the bundle
// would hold it or list it as withdrawn. Otherwise the key may be newer than
// the bundle, and a sync may help.
func unknownKey(payload, kid []byte, b *bundle.Bundle) error {
	if isAttestation(payload) {
		return ErrLabAttestation
	}
	var pbuf [token.MaxLen * 3 / 4]byte
	if n, err := b64.Decode(pbuf[:], payload); err == nil {
		if c, err := readClaims(pbuf[:n]); err == nil {
			g := b.Policy.GranularitySeconds
			lead := int64(b.Policy.Lifetime.Max()/time.Second) + g
			if c.nbf < b.IssuedAt-lead && c.exp > b.IssuedAt {
				return fmt.Errorf("%w: kid %q, and the token's window starts %s, before the bundle (issued %s) was made",
					ErrUnknownIssuer, clipped(kid), fmtUnix(c.nbf), fmtUnix(b.IssuedAt))
			}
		}
	}
	return fmt.Errorf("%w: kid %q; if the issuer made a new key, a sync will fetch it", ErrUnknownKey, clipped(kid))
}

// isAttestation reports whether a JWS payload (base64url, unauthenticated)
// reads as a lab's attestation: an object with the attestation claims iss
// and kind, which no token carries. Only refusals get here.
func isAttestation(payload []byte) bool {
	var pbuf [token.MaxLen * 3 / 4]byte
	n, err := b64.Decode(pbuf[:], payload)
	if err != nil {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(pbuf[:n], &m) != nil {
		return false
	}
	_, iss := m["iss"]
	_, kind := m["kind"]
	return iss && kind
}
