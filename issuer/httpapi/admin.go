package httpapi

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

const adminLocal = "admin"

// requireAdmin authenticates first: the bearer token is checked against
// the stored hashes (in constant time, in the core). A valid token then
// spends its own per-token budget (AdminPerMinute); a failed attempt
// spends its client's failure budget (AdminFailuresPerMinute), which no
// valid token ever consults, so a flood of wrong tokens from anywhere
// cannot lock the administrator out. The token's name is kept for the
// audit log.
func (s *Server) requireAdmin(c *fiber.Ctx) error {
	now := s.iss.Now()
	auth := c.Get(fiber.HeaderAuthorization)
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	name := ""
	if ok && tok != "" {
		name, ok = s.iss.AuthenticateAdmin(strings.TrimSpace(tok))
	} else {
		ok = false
	}
	if !ok {
		if ok, retry := s.adminFailures.allow(clientKey(s.clientSalt, c), now); !ok {
			setRetryAfter(c, retry)
			return apiError(fiber.StatusTooManyRequests, "rate_limited", "too many failed admin authentications from this client; try again in a minute")
		}
		if auth == "" || tok == "" {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="healthcode-admin"`)
			return apiError(fiber.StatusUnauthorized, "unauthorized", "an admin bearer token is required")
		}
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="healthcode-admin", error="invalid_token"`)
		return apiError(fiber.StatusUnauthorized, "unauthorized", "the admin token is not valid")
	}
	if ok, retry := s.adminCalls.allow(name, now); !ok {
		setRetryAfter(c, retry)
		return apiError(fiber.StatusTooManyRequests, "rate_limited", "too many admin calls with this token; try again in a minute")
	}
	c.Locals(adminLocal, name)
	return c.Next()
}

func setRetryAfter(c *fiber.Ctx, d time.Duration) {
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(max(1, (d+time.Second-1)/time.Second))))
}

func adminName(c *fiber.Ctx) string { s, _ := c.Locals(adminLocal).(string); return s }

// AttesterJSON is an attester as the admin API shows it.
type AttesterJSON struct {
	ID    string    `json:"id"`
	Key   string    `json:"key"`
	Added time.Time `json:"added,omitzero"`
}

// AuditEntryJSON is an audit entry as the admin API shows it.
type AuditEntryJSON struct {
	Time   time.Time `json:"time"`
	Admin  string    `json:"admin"`
	Action string    `json:"action"`
	Detail string    `json:"detail"`
}

// KeyJSON is a signing key as the admin API lists it, without its private
// part.
type KeyJSON struct {
	Kid       string    `json:"kid"`
	Status    string    `json:"status"`
	Created   time.Time `json:"created"`
	ActiveAt  time.Time `json:"active_at"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DestroyAt time.Time `json:"destroy_at"`
}

// RevocationJSON is what revoking a key did: the key revoked, the key that
// signs now and the bundle that withdraws the revoked one.
type RevocationJSON struct {
	Kid            string `json:"kid"`
	SigningKid     string `json:"signing_kid"`
	BundleSequence uint64 `json:"bundle_sequence"`
}

func (s *Server) adminRoutes(r fiber.Router) {
	r.Get("/attesters", func(c *fiber.Ctx) error {
		list, err := s.iss.Attesters(c.UserContext())
		if err != nil {
			return err
		}
		out := make([]AttesterJSON, len(list))
		for n, a := range list {
			out[n] = AttesterJSON{ID: a.ID, Key: keyfile.EncodePublic(a.Public), Added: a.Added}
		}
		return c.JSON(fiber.Map{"attesters": out})
	})
	r.Post("/attesters", func(c *fiber.Ctx) error {
		if err := requireJSON(c); err != nil {
			return err
		}
		var req AttesterJSON
		if err := decodeStrict(c.Body(), &req); err != nil {
			return err
		}
		pub, err := keyfile.ParsePublic(req.Key)
		if err != nil {
			return apiError(fiber.StatusBadRequest, "invalid_attester", "key: "+err.Error())
		}
		if err := s.iss.AddAttester(c.UserContext(), adminName(c), req.ID, pub); err != nil {
			return coreError(err)
		}
		return c.Status(fiber.StatusCreated).JSON(AttesterJSON{ID: req.ID, Key: keyfile.EncodePublic(pub)})
	})
	r.Delete("/attesters/:id", func(c *fiber.Ctx) error {
		if err := s.iss.RemoveAttester(c.UserContext(), adminName(c), c.Params("id")); err != nil {
			return coreError(err)
		}
		return c.SendStatus(fiber.StatusNoContent)
	})

	r.Get("/policy", func(c *fiber.Ctx) error {
		raw, err := s.iss.Policy().Canonical()
		if err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
		return c.Send(raw)
	})
	r.Put("/policy", func(c *fiber.Ctx) error {
		p, err := parsePolicy(c)
		if err != nil {
			return err
		}
		if err := s.iss.SetPolicy(c.UserContext(), adminName(c), p); err != nil {
			return coreError(err)
		}
		return c.JSON(fiber.Map{"version": p.Version})
	})
	r.Post("/policy/validate", func(c *fiber.Ctx) error {
		p, err := parsePolicy(c)
		if err != nil {
			return err
		}
		return c.JSON(fiber.Map{"valid": true, "version": p.Version})
	})

	r.Get("/audit", func(c *fiber.Ctx) error {
		entries, err := s.iss.Audit(c.UserContext())
		if err != nil {
			return err
		}
		out := make([]AuditEntryJSON, len(entries))
		for n, e := range entries {
			out[n] = AuditEntryJSON{Time: e.Time, Admin: e.Admin, Action: e.Action, Detail: e.Detail}
		}
		return c.JSON(fiber.Map{"entries": out})
	})

	r.Get("/keys", func(c *fiber.Ctx) error {
		keys := s.iss.Keys()
		out := make([]KeyJSON, len(keys))
		for n, k := range keys {
			out[n] = KeyJSON{Kid: k.ID, Status: k.Status, Created: k.Created, ActiveAt: k.ActiveAt,
				NotBefore: k.NotBefore, NotAfter: k.NotAfter, DestroyAt: k.DestroyAt}
		}
		return c.JSON(fiber.Map{"keys": out})
	})
	r.Post("/keys/rotate", func(c *fiber.Ctx) error {
		var req struct {
			Immediate bool `json:"immediate"`
		}
		if len(c.Body()) > 0 {
			if err := decodeStrict(c.Body(), &req); err != nil {
				return err
			}
		}
		kid, at, err := s.iss.RotateKeys(c.UserContext(), adminName(c), req.Immediate)
		if err != nil {
			return coreError(err)
		}
		return c.JSON(fiber.Map{"kid": kid, "active_at": at.UTC()})
	})

	r.Post("/keys/:kid/revoke", func(c *fiber.Ctx) error {
		if len(c.Body()) > 0 {
			var req struct{}
			if err := decodeStrict(c.Body(), &req); err != nil {
				return err
			}
		}
		rev, err := s.iss.RevokeKey(c.UserContext(), adminName(c), c.Params("kid"))
		if err != nil {
			return coreError(err)
		}
		return c.JSON(RevocationJSON{Kid: rev.Revoked, SigningKid: rev.Signing, BundleSequence: rev.Sequence})
	})

	r.Get("/tokens", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"names": s.iss.AdminTokens()}) })
	r.Post("/tokens", func(c *fiber.Ctx) error {
		var req struct {
			Name string `json:"name"`
		}
		if err := decodeStrict(c.Body(), &req); err != nil {
			return err
		}
		tok, err := s.iss.CreateAdminToken(c.UserContext(), adminName(c), req.Name)
		if err != nil {
			return coreError(err)
		}
		c.Set(fiber.HeaderCacheControl, "no-store")
		return c.Status(fiber.StatusCreated).JSON(fiber.Map{"name": req.Name, "token": tok})
	})
	r.Delete("/tokens/:name", func(c *fiber.Ctx) error {
		if err := s.iss.RevokeAdminToken(c.UserContext(), adminName(c), c.Params("name")); err != nil {
			return coreError(err)
		}
		return c.SendStatus(fiber.StatusNoContent)
	})
}

func parsePolicy(c *fiber.Ctx) (*policy.Policy, error) {
	if err := requireJSON(c); err != nil {
		return nil, err
	}
	p, err := policy.Parse(c.Body())
	if err != nil {
		return nil, apiError(fiber.StatusUnprocessableEntity, "invalid_policy", err.Error())
	}
	return p, nil
}

// coreError maps the core's input errors to API errors; anything else is
// internal.
func coreError(err error) error {
	var ie *issuer.InputError
	if errors.As(err, &ie) {
		return kindError(ie.Kind, ie.Code, ie.Message, err)
	}
	return err
}
