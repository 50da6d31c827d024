package httpapi

import (
	"errors"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/healthcode/healthcode/issuer"
)

// TokensRequest is the body of POST /v1/tokens.
type TokensRequest struct {
	Attestations []string `json:"attestations"`
}

// TokenJSON is one token of a TokensResponse.
type TokenJSON struct {
	Token     string `json:"token"`
	NotBefore int64  `json:"nbf"`
	Expires   int64  `json:"exp"`
}

// TokensResponse is the answer to POST /v1/tokens.
type TokensResponse struct {
	Colour string      `json:"colour"`
	Tokens []TokenJSON `json:"tokens"`
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
	var req TokensRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		outcome = "malformed_request"
		return err
	}
	if req.Attestations == nil {
		outcome = "malformed_request"
		return apiError(fiber.StatusBadRequest, "malformed_request", `body must be {"attestations": ["..."]}`)
	}
	if len(req.Attestations) > MaxAttestations {
		outcome = issuer.CodeTooMany
		return apiError(fiber.StatusBadRequest, issuer.CodeTooMany, fmt.Sprintf("%d attestations given; at most %d per request", len(req.Attestations), MaxAttestations))
	}
	batch, err := s.iss.Redeem(c.UserContext(), req.Attestations)
	if err != nil {
		var re *issuer.RedeemError
		if errors.As(err, &re) {
			outcome = re.Code
			msg := re.Message
			if re.Index >= 0 && len(req.Attestations) > 1 {
				msg = fmt.Sprintf("attestation %d: %s", re.Index, re.Message)
			}
			return apiError(re.Status, re.Code, msg)
		}
		return err
	}
	outcome = "ok"
	s.metrics.tokens.WithLabelValues(batch.Colour.String()).Add(float64(len(batch.Tokens)))
	resp := TokensResponse{Colour: batch.Colour.String(), Tokens: make([]TokenJSON, len(batch.Tokens))}
	for n, t := range batch.Tokens {
		resp.Tokens[n] = TokenJSON{Token: t.Token, NotBefore: t.NotBefore.Unix(), Expires: t.Expires.Unix()}
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(resp)
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
