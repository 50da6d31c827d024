// Package attestation is the attester's signed statement about one person:
// "negative test sampled at T". It holds only the claims invariant 1 allows;
// Verify refuses anything else, naming the claim, and returns Evidence.
package attestation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/internal/clip"
)

// Kind is what the attestation states.
type Kind string

const (
	TestNegative   Kind = "test-negative"
	TestPositive   Kind = "test-positive"
	Vaccination    Kind = "vaccination"
	Recovery       Kind = "recovery"
	ExposureNotice Kind = "exposure-notice"
	IsolationOrder Kind = "isolation-order"
)

// Kinds lists every kind.
var Kinds = []Kind{TestNegative, TestPositive, Vaccination, Recovery, ExposureNotice, IsolationOrder}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// KindNames is the list of kinds for messages.
func KindNames() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// MaxLen bounds an attestation's compact form.
const MaxLen = 2048

// MaxIDLen and MaxHintLen bound the free-text claims.
const (
	MaxIDLen       = 64
	MaxHintLen     = 16
	MaxAttesterLen = 64
)

// A holder hint is at most MaxHintLen characters, each an ASCII letter, a
// digit, a space or '-' (initials and a birth year: "ZS 1990"). Nothing
// else: a hint is printed at the door, and control characters, bidi
// overrides or look-alike letters there would let a hint pose as a verdict.
const HintCharset = "A-Z a-z 0-9, space and -"

// CheckHint says what is wrong with a holder hint, nil if nothing. The
// message never repeats the hint.
func CheckHint(h string) error {
	for i := 0; i < len(h); i++ {
		if !hintByte(h[i]) {
			return fmt.Errorf("holder hint has a character at byte %d outside %s", i, HintCharset)
		}
	}
	// All ASCII from here: bytes are characters.
	if len(h) > MaxHintLen {
		return fmt.Errorf("holder hint is longer than %d characters", MaxHintLen)
	}
	return nil
}

func hintByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == ' ' || c == '-'
}

// Claims is the whole allow-list (invariant 1). JSON names are the wire names.
type Claims struct {
	Attester string `json:"iss"`
	Kind     Kind   `json:"kind"`
	At       int64  `json:"at"`
	Expires  int64  `json:"exp"`
	ID       string `json:"jti"`
	Hint     string `json:"hint,omitempty"`
}

// AllowedClaims names every claim an attestation may carry.
var AllowedClaims = []string{"iss", "kind", "at", "exp", "jti", "hint"}

func (c Claims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Expires, 0)), nil
}
func (c Claims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c Claims) GetIssuedAt() (*jwt.NumericDate, error)  { return nil, nil }
func (c Claims) GetIssuer() (string, error)              { return c.Attester, nil }
func (c Claims) GetSubject() (string, error)             { return "", nil }
func (c Claims) GetAudience() (jwt.ClaimStrings, error)  { return nil, nil }

// Evidence is what a verified attestation proves, for the policy to judge.
type Evidence struct {
	Attester string
	Kind     Kind
	At       time.Time // when the event (sampling, vaccination...) happened
	Expires  time.Time // end of redemption; also bounds the replay record
	ID       string    // unique per attester; the replay key is derived from it
	Hint     string
}

// check validates the claim values, independent of time and signature.
func (c Claims) check() error {
	switch {
	case c.Attester == "":
		return errorf(CodeMissingClaim, "attestation has no attester (iss)")
	case len(c.Attester) > MaxAttesterLen:
		return errorf(CodeMalformed, "attester (iss) is longer than %d characters", MaxAttesterLen)
	case c.Kind == "":
		return errorf(CodeMissingClaim, "attestation has no kind")
	case !c.Kind.Valid():
		return errorf(CodeBadKind, "kind %q is not one of: %s", clip.String(string(c.Kind), 32), KindNames())
	case c.At == 0:
		return errorf(CodeMissingClaim, "attestation has no event time (at)")
	case c.Expires == 0:
		return errorf(CodeMissingClaim, "attestation has no expiry (exp)")
	case c.Expires <= c.At:
		return errorf(CodeMalformed, "attestation expires (exp) before its event time (at)")
	case c.ID == "":
		return errorf(CodeMissingClaim, "attestation has no id (jti)")
	case len(c.ID) > MaxIDLen:
		return errorf(CodeMalformed, "attestation id (jti) is longer than %d characters", MaxIDLen)
	}
	if err := CheckHint(c.Hint); err != nil {
		return errorf(CodeMalformed, "%v", err)
	}
	return nil
}

// Sign returns the compact JWS of c signed by key. The header carries no typ
// and no kid: the attester is named by iss.
func Sign(key ed25519.PrivateKey, c Claims) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("attestation: not an Ed25519 private key")
	}
	if err := c.check(); err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	delete(t.Header, "typ")
	return t.SignedString(key)
}

// Keys finds an attester's public key by its id. ok is false for an unknown
// attester.
type Keys interface {
	AttesterKey(id string) (key ed25519.PublicKey, ok bool)
}

// Options are the limits the issuer's policy sets.
type Options struct {
	Now         time.Time
	Skew        time.Duration // allowance for clocks that disagree
	MaxLifetime time.Duration // longest exp - now accepted
}

// Verify checks raw's form, allow-list, attester, signature and time, and
// returns its evidence. Every failure is an *Error with a code.
func Verify(raw string, keys Keys, o Options) (Evidence, error) {
	if len(raw) > MaxLen {
		return Evidence{}, errorf(CodeMalformed, "attestation is longer than %d bytes", MaxLen)
	}
	claims, err := decodeClaims(raw)
	if err != nil {
		return Evidence{}, err
	}
	pub, ok := keys.AttesterKey(claims.Attester)
	if !ok {
		return Evidence{}, errorf(CodeUnknownAttester, "attester %q is not registered", clip.String(claims.Attester, 32))
	}
	var verified Claims
	_, err = jwt.ParseWithClaims(raw, &verified, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return o.Now }),
		jwt.WithLeeway(o.Skew),
	)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return Evidence{}, errorf(CodeExpired, "attestation expired at %s", time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return Evidence{}, errorf(CodeBadSignature, "attestation signature does not verify under the key of attester %q", clip.String(claims.Attester, 32))
	case errors.Is(err, jwt.ErrTokenUnverifiable), errors.Is(err, jwt.ErrSignatureInvalid):
		return Evidence{}, errorf(CodeBadSignature, "attestation is not signed with EdDSA")
	default:
		return Evidence{}, errorf(CodeMalformed, "attestation is not a valid JWS")
	}
	at := time.Unix(verified.At, 0)
	exp := time.Unix(verified.Expires, 0)
	if at.After(o.Now.Add(o.Skew)) {
		return Evidence{}, errorf(CodeFuture, "attestation event time (at) %s is in the future", at.UTC().Format(time.RFC3339))
	}
	if o.MaxLifetime > 0 && exp.Sub(o.Now) > o.MaxLifetime+o.Skew {
		return Evidence{}, errorf(CodeTooLong, "attestation expires more than %s from now; the policy allows at most that", o.MaxLifetime)
	}
	return Evidence{
		Attester: verified.Attester,
		Kind:     verified.Kind,
		At:       at,
		Expires:  exp,
		ID:       verified.ID,
		Hint:     verified.Hint,
	}, nil
}

// decodeClaims reads the payload without checking the signature, to enforce
// the allow-list and find the attester. Nothing from it is trusted further.
func decodeClaims(raw string) (Claims, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return Claims{}, errorf(CodeMalformed, "attestation is not a compact JWS (want three dot-separated parts)")
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return Claims{}, errorf(CodeMalformed, "attestation header is not base64url")
	}
	h, err := members("header", hdr)
	if err != nil {
		return Claims{}, err
	}
	if _, ok := h["crit"]; ok {
		// RFC 7515 §4.1.11: extensions listed in crit must be understood
		// or the JWS refused; this issuer understands none.
		return Claims{}, errorf(CodeMalformed, "attestation header has crit; no header extension is understood here")
	}
	for name := range h {
		if name != "alg" && name != "typ" && name != "kid" {
			return Claims{}, errorf(CodeMalformed, "attestation header member %q is not allowed; a header carries only alg, typ and kid", clip.String(name, 32))
		}
	}
	var alg string
	if json.Unmarshal(h["alg"], &alg) != nil {
		alg = ""
	}
	// Named before any key is looked up: "none" and HMAC-with-the-public-key
	// are refused for what they are.
	if alg != jwt.SigningMethodEdDSA.Alg() {
		return Claims{}, errorf(CodeBadSignature, "attestation is not signed with EdDSA (alg %q)", clip.String(alg, 32))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Claims{}, errorf(CodeMalformed, "attestation payload is not base64url")
	}
	fields, err := members("payload", payload)
	if err != nil {
		return Claims{}, err
	}
	var extra []string
	for name := range fields {
		if !allowed(name) {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return Claims{}, errorf(CodeClaimNotAllowed, "claim %q is not allowed; an attestation carries only %s", clip.String(extra[0], 32), strings.Join(AllowedClaims, ", "))
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Claims{}, errorf(CodeMalformed, "attestation claims have the wrong types")
	}
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	return c, nil
}

func allowed(name string) bool {
	for _, a := range AllowedClaims {
		if name == a {
			return true
		}
	}
	return false
}

// members reads a JSON object strictly, where encoding/json is lax: every
// member name once (encoding/json keeps the last of two), and every string
// valid UTF-8, lone surrogate escapes included (encoding/json turns them
// into U+FFFD). part names the object in messages.
func members(part string, b []byte) (map[string]json.RawMessage, error) {
	what := "attestation " + part
	if !validStrings(b) {
		return nil, errorf(CodeMalformed, "%s holds a string that is not valid UTF-8", what)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errorf(CodeMalformed, "%s is not a JSON object", what)
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, errorf(CodeMalformed, "%s is not a JSON object", what)
		}
		name, ok := t.(string)
		if !ok {
			return nil, errorf(CodeMalformed, "%s is not a JSON object", what)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errorf(CodeMalformed, "%s is not a JSON object", what)
		}
		if _, dup := m[name]; dup {
			noun := "claim"
			if part == "header" {
				noun = "header member"
			}
			return nil, errorf(CodeMalformed, "%s %q appears twice in the attestation", noun, clip.String(name, 32))
		}
		m[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, errorf(CodeMalformed, "%s is not a JSON object", what)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(CodeMalformed, "%s has data after the object", what)
	}
	return m, nil
}

// validStrings reports whether b is valid UTF-8 and every \u escape in a
// string is a character or a whole surrogate pair.
func validStrings(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	in := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			in = !in
		case c == '\\' && in && i+1 < len(b):
			if b[i+1] != 'u' {
				i++ // skip the escaped character, a quote included
				continue
			}
			u, ok := hex4(b, i)
			if !ok {
				continue // a syntax error; the decoder names it
			}
			i += 5
			switch {
			case u >= 0xdc00 && u <= 0xdfff:
				return false
			case u >= 0xd800 && u <= 0xdbff:
				lo, ok := hex4(b, i+1)
				if !ok || lo < 0xdc00 || lo > 0xdfff {
					return false
				}
				i += 6
			}
		}
	}
	return true
}

// hex4 reads the escape \uXXXX at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	var u rune
	for _, h := range b[i+2 : i+6] {
		var d byte
		switch {
		case h >= '0' && h <= '9':
			d = h - '0'
		case h >= 'a' && h <= 'f':
			d = h - 'a' + 10
		case h >= 'A' && h <= 'F':
			d = h - 'A' + 10
		default:
			return 0, false
		}
		u = u<<4 | rune(d)
	}
	return u, true
}

// Codes of Error.
const (
	CodeMalformed       = "malformed_attestation"
	CodeMissingClaim    = "missing_claim"
	CodeClaimNotAllowed = "claim_not_allowed"
	CodeBadKind         = "unknown_kind"
	CodeUnknownAttester = "unknown_attester"
	CodeBadSignature    = "bad_signature"
	CodeExpired         = "attestation_expired"
	CodeFuture          = "attestation_in_future"
	CodeTooLong         = "attestation_lifetime_too_long"
)

// Error is a refused attestation: a stable code and a message fit for the
// client (it names claims, never echoes the attestation).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func errorf(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}
