package httpapi

import (
	"context"
	"crypto/ed25519"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

// Authority is what the HTTP API needs from the core, as step-ca's
// api.Authority is: the handlers call these methods and nothing else, so
// the API can be served over any core that has them. *issuer.Issuer is the
// one in use.
type Authority interface {
	Redeemer
	Publisher
	Administration
}

// Redeemer exchanges attestations for tokens (POST /v1/tokens).
type Redeemer interface {
	Redeem(ctx context.Context, req issuer.Request) (*issuer.Batch, error)
}

// Publisher serves what anyone may read: the bundle, its pin, the token
// keys and the inventory of what is held.
type Publisher interface {
	Fingerprint() string
	Bundle() (string, *bundle.Bundle)
	Inventory(ctx context.Context) ([]issuer.Category, int, error)
}

// Administration is the admin API: authentication and the administrator's
// changes, each named after the admin who made it for the audit log.
type Administration interface {
	// Now is the core's clock, so admin rate windows run on injected time.
	Now() time.Time
	AuthenticateAdmin(token string) (name string, ok bool)

	Attesters(ctx context.Context) ([]issuer.Attester, error)
	AddAttester(ctx context.Context, admin, id string, pub ed25519.PublicKey) error
	RemoveAttester(ctx context.Context, admin, id string) error

	Policy() *policy.Policy
	SetPolicy(ctx context.Context, admin string, p *policy.Policy) error

	Audit(ctx context.Context) ([]issuer.AuditEntry, error)

	Keys() []issuer.KeyInfo
	RotateKeys(ctx context.Context, admin string, immediate bool) (kid string, activeAt time.Time, err error)
	RevokeKey(ctx context.Context, admin, kid string) (issuer.Revocation, error)

	AdminTokens() []string
	CreateAdminToken(ctx context.Context, admin, name string) (token string, err error)
	RevokeAdminToken(ctx context.Context, admin, name string) error
}

var _ Authority = (*issuer.Issuer)(nil)
