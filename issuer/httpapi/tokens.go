package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/issuer"
)

// TokensRequest is the body of POST /v1/tokens: exactly
// {"attestations": ["..."], "secret": "<base64url of 32 bytes>"}, secret
// optional. Marshalling it gives a valid body; the server reads it with
// decodeTokensRequest, never with encoding/json alone.
type TokensRequest struct {
	Attestations []string `json:"attestations"`
	Secret       string   `json:"secret,omitempty"`
}

// TokenJSON is one token of a TokensResponse.
type TokenJSON struct {
	Token     string `json:"token"`
	NotBefore int64  `json:"nbf"`
	Expires   int64  `json:"exp"`
}

// TokensResponse is the answer to POST /v1/tokens (a retry's too).
type TokensResponse struct {
	Colour string      `json:"colour"`
	Tokens []TokenJSON `json:"tokens"`
	// RenewAfter (unix seconds): from then on the same attestations redeem
	// again for a new batch.
	RenewAfter int64 `json:"renew_after"`
	// EvidenceUntil (unix seconds): when the evidence ends; the wallet
	// deletes the attestations after it.
	EvidenceUntil int64 `json:"evidence_until"`
}

// ErrorResponse is every error's body.
type ErrorResponse = errorBody

func (s *Server) postTokens(c *fiber.Ctx) error {
	start := time.Now()
	outcome := "internal"
	defer func() {
		s.metrics.redemptions.WithLabelValues(outcome).Inc()
		s.metrics.latency.Observe(time.Since(start).Seconds())
	}()
	if err := requireJSON(c); err != nil {
		outcome = "unsupported_media_type"
		return err
	}
	req, err := decodeTokensRequest(c.Body())
	if err != nil {
		outcome = "malformed_request"
		return err
	}
	if len(req.Attestations) > MaxAttestations {
		outcome = issuer.CodeTooMany
		return apiError(fiber.StatusBadRequest, issuer.CodeTooMany, fmt.Sprintf("%d attestations given; at most %d per request", len(req.Attestations), MaxAttestations))
	}
	batch, err := s.iss.Redeem(c.UserContext(), req)
	if err != nil {
		var re *issuer.RedeemError
		if errors.As(err, &re) {
			outcome = re.Code
			msg := re.Message
			if re.Index >= 0 && len(req.Attestations) > 1 {
				msg = fmt.Sprintf("attestation %d: %s", re.Index, re.Message)
			}
			return kindError(re.Kind, re.Code, msg, err)
		}
		if errors.Is(err, issuer.ErrUnavailable) {
			outcome = "unavailable"
		}
		return err
	}
	outcome = "ok"
	s.metrics.tokens.WithLabelValues(batch.Colour.String()).Add(float64(len(batch.Tokens)))
	resp := TokensResponse{Colour: batch.Colour.String(), Tokens: make([]TokenJSON, len(batch.Tokens)),
		RenewAfter: batch.RenewAfter.Unix(), EvidenceUntil: batch.EvidenceUntil.Unix()}
	for n, t := range batch.Tokens {
		resp.Tokens[n] = TokenJSON{Token: t.Token, NotBefore: t.NotBefore.Unix(), Expires: t.Expires.Unix()}
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	// A token is about 230 bytes; its JSON member about 40 more.
	return c.Send(resp.appendJSON(make([]byte, 0, 128+len(resp.Tokens)*320)))
}

// malformed is a 400 for a body that is not exactly a TokensRequest.
func malformed(msg string) error {
	return apiError(fiber.StatusBadRequest, "malformed_request", msg)
}

// tokensBodyShape is what every structural refusal says the body must be.
const tokensBodyShape = `body must be {"attestations": ["..."]}, with an optional "secret"`

// decodeTokensRequest reads the body of POST /v1/tokens exactly: one JSON
// object whose members are "attestations" (an array of strings, required)
// and "secret" (a string, optional), each at most once, names matched
// case-sensitively; nothing else, nothing after it. encoding/json alone
// would match names case-insensitively and let a duplicate's last value
// win. The messages never echo more than a clipped field name. The
// attestations are copied out of the body: fiber reuses its buffer.
func decodeTokensRequest(body []byte) (issuer.Request, error) {
	var req issuer.Request
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return req, jsonError(err)
	}
	if tok != json.Delim('{') {
		return req, malformed(tokensBodyShape)
	}
	seenAtt, seenSecret := false, false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req, jsonError(err)
		}
		name, _ := tok.(string) // object keys are strings
		switch name {
		case "attestations":
			if seenAtt {
				return req, malformed(`duplicate field "attestations"`)
			}
			seenAtt = true
			var raws []json.RawMessage
			if err := dec.Decode(&raws); err != nil {
				var te *json.UnmarshalTypeError
				if errors.As(err, &te) {
					return req, malformed("field attestations has the wrong type")
				}
				return req, jsonError(err)
			}
			if raws == nil {
				return req, malformed(tokensBodyShape)
			}
			req.Attestations = make([]string, len(raws))
			for n, raw := range raws {
				// Unmarshal copies the string out of the buffer; a null
				// would silently become "".
				if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &req.Attestations[n]) != nil {
					return req, malformed(fmt.Sprintf("field attestations[%d] must be a string", n))
				}
			}
		case "secret":
			if seenSecret {
				return req, malformed(`duplicate field "secret"`)
			}
			seenSecret = true
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return req, jsonError(err)
			}
			secret, err := decodeSecret(raw)
			if err != nil {
				return req, err
			}
			req.Secret = secret
		default:
			for _, known := range []string{"attestations", "secret"} {
				if strings.EqualFold(name, known) {
					return req, malformed(fmt.Sprintf("unknown field %q: field names are case-sensitive (%q)", clip.String(name, 32), known))
				}
			}
			return req, malformed(fmt.Sprintf("unknown field %q", clip.String(name, 32)))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return req, jsonError(err)
	}
	if !seenAtt {
		return req, malformed(tokensBodyShape)
	}
	switch _, err := dec.Token(); {
	case err == io.EOF:
	case err == nil:
		return req, malformed("request body holds more than one JSON value")
	default:
		return req, jsonError(err)
	}
	return req, nil
}

// secretChars is the length of a secret in unpadded base64url.
var secretChars = base64.RawURLEncoding.EncodedLen(issuer.SecretSize)

// decodeSecret reads "secret": a string of 43 base64url characters (no
// padding) holding 32 bytes. Anything else is a 400 naming the field.
func decodeSecret(raw json.RawMessage) ([]byte, error) {
	var s string
	// A null would unmarshal silently to "".
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, malformed(fmt.Sprintf("field secret must be a string of %d base64url characters", secretChars))
	}
	if len(s) != secretChars {
		return nil, malformed(fmt.Sprintf("field secret must be %d bytes in base64url (%d characters, no padding), got %d characters", issuer.SecretSize, secretChars, len(s)))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, malformed("field secret is not base64url (A-Z, a-z, 0-9, '-', '_', no padding)")
	}
	return b, nil
}

func (s *Server) getBundle(c *fiber.Ctx) error {
	raw, _ := s.iss.Bundle()
	c.Set(fiber.HeaderContentType, "application/jwt")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.SendString(raw)
}

// InventoryJSON is the public inventory (GET /v1/inventory): counts only.
type InventoryJSON struct {
	Categories    []CategoryJSON `json:"categories"`
	PolicyVersion int            `json:"policy_version"`
}

// CategoryJSON is one category of the inventory.
type CategoryJSON struct {
	Name         string `json:"name"`
	Count        int    `json:"count"`
	Oldest       *int64 `json:"oldest"`
	NextDeadline *int64 `json:"next_deadline"`
	Retention    string `json:"retention"`
}

func unixPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

func (s *Server) getInventory(c *fiber.Ctx) error {
	cats, version, err := s.iss.Inventory(c.UserContext())
	if err != nil {
		return err
	}
	out := InventoryJSON{PolicyVersion: version, Categories: make([]CategoryJSON, len(cats))}
	for n, cat := range cats {
		out.Categories[n] = CategoryJSON{Name: cat.Name, Count: cat.Count, Oldest: unixPtr(cat.Oldest), NextDeadline: unixPtr(cat.NextDeadline), Retention: cat.Retention}
	}
	return c.JSON(out)
}
