// Package httpapi is the issuer's HTTP adapter (fiber). It translates
// requests into calls on the core issuer and errors into
// {"error": {"code", "message"}}; no internal error text, stack trace or
// echoed input reaches a client, and no client address, token or
// attestation reaches a log line (invariant 7).
package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/etag"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/gofiber/fiber/v2/middleware/limiter"

	"github.com/healthcode/healthcode/issuer"
)

// Limits on requests.
const (
	BodyLimit       = 64 << 10
	HeaderLimit     = 8 << 10
	MaxAttestations = 16 // hard cap before the policy's max_per_request
)

// Options configure the HTTP server.
type Options struct {
	Logger *slog.Logger
	// RedeemPerMinute and InventoryPerMinute limit requests per client per
	// minute; AdminPerMinute limits admin calls per admin token (checked
	// after authentication, so nobody else can spend a token's budget);
	// AdminFailuresPerMinute limits failed admin authentications per
	// client, apart, so a flood of wrong tokens never blocks a valid one.
	// 0 turns a limit off (load tests on 127.0.0.1).
	RedeemPerMinute        int
	InventoryPerMinute     int
	AdminPerMinute         int
	AdminFailuresPerMinute int
	ReadTimeout            time.Duration
	WriteTimeout           time.Duration
	IdleTimeout            time.Duration
	// Static apps, mounted at /verify/ and /wallet/ when set.
	Verify fs.FS
	Wallet fs.FS
	// Parts, if set, says whether each part the server depends on (a
	// replica's etcd and Redis) answers: a name and nil, or an error. The
	// error never reaches the client; /healthz names each part "ok" or
	// "unreachable". A replica whose parts fail still answers 200 (it may
	// serve what it holds, and restarting it mends nothing): the body
	// says "degraded".
	Parts func(ctx context.Context) []Part
}

// Part is one dependency's state for /healthz.
type Part struct {
	Name string
	Err  error
}

// DefaultOptions are the production settings.
func DefaultOptions() Options {
	return Options{
		RedeemPerMinute:        30,
		InventoryPerMinute:     60,
		AdminPerMinute:         60,
		AdminFailuresPerMinute: 10,
		ReadTimeout:            10 * time.Second,
		WriteTimeout:           10 * time.Second,
		IdleTimeout:            60 * time.Second,
	}
}

// Server is the issuer's HTTP API.
type Server struct {
	iss     Authority
	log     *slog.Logger
	metrics *Metrics
	app     *fiber.App

	adminCalls    *windowLimiter // per admin token name
	adminFailures *windowLimiter // per client (salted address hash)
	clientSalt    [16]byte
}

// New builds the fiber app over iss (an *issuer.Issuer in every use).
func New(iss Authority, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{iss: iss, log: o.Logger, metrics: NewMetrics(),
		adminCalls: newWindowLimiter(o.AdminPerMinute, time.Minute), adminFailures: newWindowLimiter(o.AdminFailuresPerMinute, time.Minute)}
	_, _ = rand.Read(s.clientSalt[:])
	s.app = fiber.New(fiber.Config{
		// Values from the request outlive no handler here, but Immutable
		// makes that true by construction.
		Immutable:             true,
		BodyLimit:             BodyLimit,
		ReadBufferSize:        HeaderLimit,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		IdleTimeout:           o.IdleTimeout,
		DisableStartupMessage: true,
		ErrorHandler:          s.errorHandler,
		AppName:               "healthcode-issuer",
	})
	a := s.app
	a.Use(s.recoverer, s.securityHeaders)

	a.Get("/healthz", func(c *fiber.Ctx) error {
		if o.Parts == nil {
			return c.JSON(fiber.Map{"status": "ok"})
		}
		status, parts := "ok", fiber.Map{}
		for _, p := range o.Parts(c.UserContext()) {
			parts[p.Name] = "ok"
			if p.Err != nil {
				status, parts[p.Name] = "degraded", "unreachable"
				s.log.Warn("a part does not answer", "part", p.Name, "err", p.Err)
			}
		}
		return c.JSON(fiber.Map{"status": status, "parts": parts})
	})
	a.Get("/.well-known/healthcode/bundle", s.getBundle)
	a.Get("/.well-known/healthcode/pin", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
		return c.SendString(s.iss.Fingerprint() + "\n")
	})
	a.Get("/.well-known/jwks.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, "public, max-age=300")
		return c.JSON(fiber.Map{"keys": s.jwks()})
	})
	inventory := []fiber.Handler{}
	if o.InventoryPerMinute > 0 {
		inventory = append(inventory, rateLimit(o.InventoryPerMinute))
	}
	a.Get("/v1/inventory", append(inventory, s.getInventory)...)
	a.Get("/openapi.yaml", getOpenAPI)

	redeem := []fiber.Handler{}
	if o.RedeemPerMinute > 0 {
		redeem = append(redeem, rateLimit(o.RedeemPerMinute))
	}
	a.Post("/v1/tokens", append(redeem, s.postTokens)...)

	adm := a.Group("/v1/admin")
	// Authentication first: limits then count per admin token, and
	// failures per client, so they never lock out a valid token.
	adm.Use(s.requireAdmin)
	s.adminRoutes(adm)

	if o.Verify != nil {
		mountApp(a, "/verify", o.Verify)
	}
	if o.Wallet != nil {
		mountApp(a, "/wallet", o.Wallet)
	}
	a.Get("/", func(c *fiber.Ctx) error {
		return c.Redirect("/wallet/", fiber.StatusFound)
	})
	a.Use(func(c *fiber.Ctx) error { return apiError(fiber.StatusNotFound, "not_found", "no such endpoint") })
	return s
}

func mountApp(a *fiber.App, prefix string, fsys fs.FS) {
	a.Get(prefix, func(c *fiber.Ctx) error {
		// Routing is not strict, so this route also matches prefix+"/":
		// redirecting that too would loop.
		if c.Path() != prefix {
			return c.Next()
		}
		return c.Redirect(prefix+"/", fiber.StatusMovedPermanently)
	})
	a.Use(prefix, func(c *fiber.Ctx) error {
		// The service worker must be allowed to control the whole app.
		if strings.HasSuffix(c.Path(), "/sw.js") {
			c.Set("Service-Worker-Allowed", prefix+"/")
			c.Set(fiber.HeaderCacheControl, "no-cache")
		}
		return c.Next()
	},
		// Embedded files have no modification time; an ETag lets browsers
		// and service workers revalidate the 6 MB wasm module instead of
		// downloading it again on every load.
		etag.New(),
		filesystem.New(filesystem.Config{Root: http.FS(fsys), Index: "index.html", MaxAge: 0}))
}

// App is the fiber app, for Listen and Test.
func (s *Server) App() *fiber.App { return s.app }

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// MetricsHandler serves /metrics (Prometheus text). It is not on the
// public app: the operator serves it on its own, loopback, listener.
func (s *Server) MetricsHandler() http.Handler { return s.metrics.HTTPHandler() }

// Shutdown stops accepting requests and waits for those in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }

// JWK is one key of the JWKS (RFC 8037 OKP).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// jwks is the published token keys (those in the bundle) as JWKs.
func (s *Server) jwks() []JWK {
	_, b := s.iss.Bundle()
	if b == nil {
		return nil
	}
	out := make([]JWK, 0, len(b.Keys))
	for _, k := range b.Keys {
		out = append(out, JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.Public), Kid: k.ID, Alg: "EdDSA", Use: "sig"})
	}
	return out
}

// --- errors ----------------------------------------------------------------

// APIError is an error with a status, a code and a client-safe message.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

func apiError(status int, code, msg string) error {
	return &APIError{Status: status, Code: code, Message: msg}
}

// kindStatus is the one place the core's error kinds become HTTP statuses.
var kindStatus = map[issuer.Kind]int{
	issuer.KindInvalid:     fiber.StatusBadRequest,
	issuer.KindNotFound:    fiber.StatusNotFound,
	issuer.KindConflict:    fiber.StatusConflict,
	issuer.KindRefused:     fiber.StatusUnprocessableEntity,
	issuer.KindUnavailable: fiber.StatusServiceUnavailable,
}

// RetryAfter is the Retry-After (seconds) of an answer for a part that did
// not answer: about a Redis failover (4-6 s measured) or an etcd election
// with a request's timeout (5 s).
const RetryAfter = 5

// unavailableError is the API error for a backing part that did not
// answer (issuer.ErrUnavailable): the client may retry the same request.
func unavailableError(err error) error {
	return kindError(issuer.KindUnavailable, "unavailable", "the issuer cannot reach its storage now; try again shortly", err)
}

// kindError is the API error for a core refusal of kind k. A kind without
// a status is a bug here, not the client's: it stays internal (a 500, the
// detail logged).
func kindError(k issuer.Kind, code, msg string, err error) error {
	status, ok := kindStatus[k]
	if !ok {
		return fmt.Errorf("no HTTP status for error kind %v: %w", k, err)
	}
	return apiError(status, code, msg)
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// errorHandler replaces fiber's default, which sends err.Error() to the
// client. Only APIError and fiber's own status errors carry text out;
// anything else is a 500 with a fixed message, detail to the log.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	var body errorBody
	status := fiber.StatusInternalServerError
	body.Error.Code, body.Error.Message = "internal", "internal error"

	var ae *APIError
	var fe *fiber.Error
	var ue *issuer.UnavailableError
	if errors.As(err, &ue) {
		// The operator learns which part; the client only to come back.
		s.log.Error("a part does not answer", "part", ue.Part, "path", routePath(c), "err", err)
		err = unavailableError(err)
	}
	switch {
	case errors.As(err, &ae):
		if ae.Status == fiber.StatusServiceUnavailable {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(RetryAfter))
		}
		status, body.Error.Code, body.Error.Message = ae.Status, ae.Code, ae.Message
	case errors.As(err, &fe):
		status = fe.Code
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			body.Error.Code, body.Error.Message = "body_too_large", "request body is larger than 64 KiB"
		case fiber.StatusRequestHeaderFieldsTooLarge:
			body.Error.Code, body.Error.Message = "headers_too_large", "request headers are larger than 8 KiB"
		case fiber.StatusNotFound:
			body.Error.Code, body.Error.Message = "not_found", "not found"
		case fiber.StatusMethodNotAllowed:
			body.Error.Code, body.Error.Message = "method_not_allowed", "method not allowed"
		case fiber.StatusTooManyRequests:
			body.Error.Code, body.Error.Message = "rate_limited", "too many requests; try again in a minute"
		default:
			if fe.Code >= 500 {
				s.log.Error("request failed", "path", routePath(c), "err", err)
				body.Error.Code, body.Error.Message = "internal", "internal error"
			} else {
				body.Error.Code, body.Error.Message = "bad_request", http.StatusText(fe.Code)
			}
		}
	default:
		// Internal detail stays with the operator. The route pattern, not
		// the raw path: paths can carry identifiers.
		s.log.Error("request failed", "path", routePath(c), "err", err)
	}
	return c.Status(status).JSON(body)
}

func routePath(c *fiber.Ctx) string {
	if r := c.Route(); r != nil {
		return r.Path
	}
	return ""
}

func (s *Server) recoverer(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in handler", "path", routePath(c))
			err = errors.New("panic")
		}
	}()
	return c.Next()
}

func (s *Server) securityHeaders(c *fiber.Ctx) error {
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set("X-Frame-Options", "DENY")
	return c.Next()
}

// rateLimit limits requests per client per minute. The limiter keys by a
// salted hash of the address, held only for its one-minute window, so no
// client address is kept even in memory.
func rateLimit(perMinute int) fiber.Handler {
	var salt [16]byte
	_, _ = rand.Read(salt[:])
	return limiter.New(limiter.Config{
		Max:          perMinute,
		Expiration:   time.Minute,
		KeyGenerator: func(c *fiber.Ctx) string { return clientKey(salt, c) },
		LimitReached: func(c *fiber.Ctx) error {
			return apiError(fiber.StatusTooManyRequests, "rate_limited", "too many requests; try again in a minute")
		},
	})
}

// clientKey is a salted hash of the client's address: limiters key by it,
// so no address is kept even in memory.
func clientKey(salt [16]byte, c *fiber.Ctx) string {
	h := sha256.New()
	h.Write(salt[:])
	h.Write([]byte(c.IP()))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}

// decodeStrict reads exactly one JSON value into v, refusing unknown
// fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return apiError(fiber.StatusBadRequest, "malformed_request", "request body holds more than one JSON value")
	}
	return nil
}

// jsonError describes a JSON error without echoing the input.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return apiError(fiber.StatusBadRequest, "malformed_request", "request body is not valid JSON")
	case errors.As(err, &te):
		return apiError(fiber.StatusBadRequest, "malformed_request", "field "+te.Field+" has the wrong type")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The name is the client's own text: cut it short, as the
		// attestation package does with the claims it names.
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if len(name) > 34 {
			name = name[:33] + "…\""
		}
		return apiError(fiber.StatusBadRequest, "malformed_request", "unknown field "+strings.ToValidUTF8(name, "?"))
	case errors.Is(err, context.Canceled):
		return err
	}
	return apiError(fiber.StatusBadRequest, "malformed_request", "request body is not valid JSON")
}

func requireJSON(c *fiber.Ctx) error {
	ct := c.Get(fiber.HeaderContentType)
	if ct == "" {
		return nil
	}
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != fiber.MIMEApplicationJSON {
		return apiError(fiber.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
	}
	return nil
}
