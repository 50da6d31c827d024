// Package token defines the colour token: the compact JWS a resident shows
// at the door. It carries only what invariant 2 allows: colour, validity
// window, policy version, key id (in the header), a per-copy random nonce so
// that copies differ, and the holder hint when the policy turns it on.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/internal/jsonw"
)

// NonceBytes is the size of the per-copy nonce. It only has to make copies
// differ; it identifies nothing and is never stored.
const NonceBytes = 6

// MaxLen bounds what a parser will look at; a real token is about 212
// characters (hint off) and 230 (hint on).
const MaxLen = 1024

// Claims are the token's claims, with short names to keep the QR small.
// Field order is the JSON order.
type Claims struct {
	Colour    string `json:"c"`
	Expires   int64  `json:"exp"`
	Hint      string `json:"h,omitempty"`
	Nonce     string `json:"n"`
	NotBefore int64  `json:"nbf"`
	Version   int    `json:"v"`
}

// AllowedClaims is the full set of claim names a token may carry.
var AllowedClaims = map[string]bool{"c": true, "exp": true, "h": true, "n": true, "nbf": true, "v": true}

// jwt.Claims, so golang-jwt can check the time claims.
func (c Claims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Expires, 0)), nil
}
func (c Claims) GetNotBefore() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.NotBefore, 0)), nil
}
func (c Claims) GetIssuedAt() (*jwt.NumericDate, error) { return nil, nil }
func (c Claims) GetIssuer() (string, error)             { return "", nil }
func (c Claims) GetSubject() (string, error)            { return "", nil }
func (c Claims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

// Signer signs tokens with one Ed25519 key. The header never changes for a
// key, so it is encoded once.
type Signer struct {
	kid    string
	key    ed25519.PrivateKey
	header string
}

// NewSigner returns a signer for key, named kid in token headers.
func NewSigner(kid string, key ed25519.PrivateKey) (*Signer, error) {
	if kid == "" {
		return nil, errors.New("token: empty key id")
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("token: not an Ed25519 private key")
	}
	// No "typ": every byte counts toward the QR version.
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}{"EdDSA", kid})
	if err != nil {
		return nil, err
	}
	return &Signer{kid: kid, key: key, header: base64.RawURLEncoding.EncodeToString(h)}, nil
}

// KeyID is the kid this signer writes.
func (s *Signer) KeyID() string { return s.kid }

// Sign returns the compact JWS for c. If c.Nonce is empty a fresh random
// nonce is filled in.
func (s *Signer) Sign(c Claims) (string, error) {
	if c.Nonce == "" {
		n, err := NewNonce()
		if err != nil {
			return "", err
		}
		c.Nonce = n
	}
	// The issuer signs a few dozen tokens per redemption: the token is
	// built in one buffer and signed with ed25519 directly (what
	// golang-jwt's EdDSA method does, less its copies), and the claims are
	// appended by hand, byte for byte what encoding/json writes for them.
	enc := base64.RawURLEncoding
	var pbuf [160]byte
	p := c.appendJSON(pbuf[:0])
	buf := make([]byte, 0, len(s.header)+2+enc.EncodedLen(len(p))+enc.EncodedLen(ed25519.SignatureSize))
	buf = append(buf, s.header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, p)
	sig := ed25519.Sign(s.key, buf)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// appendJSON appends c as encoding/json marshals it (field order, omitted
// empty hint, HTML-safe escaping).
func (c Claims) appendJSON(b []byte) []byte {
	b = append(b, `{"c":`...)
	b = jsonw.String(b, c.Colour)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.Expires, 10)
	if c.Hint != "" {
		b = append(b, `,"h":`...)
		b = jsonw.String(b, c.Hint)
	}
	b = append(b, `,"n":`...)
	b = jsonw.String(b, c.Nonce)
	b = append(b, `,"nbf":`...)
	b = strconv.AppendInt(b, c.NotBefore, 10)
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, int64(c.Version), 10)
	return append(b, '}')
}

// NewNonce returns a fresh random nonce.
func NewNonce() (string, error) {
	var b [NonceBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// KeyID derives a short key id from a public key: 4 base64url characters of
// its SHA-256 (24 bits). Issuers check new keys for collisions with the keys
// they hold; 4 characters keep the token inside QR version 10.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:3])
}
