package issuer_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/verifier"
)

// core is an issuer on a real bbolt store in a temp dir, without HTTP.
type core struct {
	t     *testing.T
	dir   string
	kek   *kek.Key
	clock *issuertest.Clock
	db    *boltstore.DB
	iss   *issuer.Issuer
	lab   ed25519.PrivateKey
}

func newCore(t *testing.T, p *policy.Policy) *core {
	t.Helper()
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c := &core{t: t, dir: filepath.Join(t.TempDir(), "data"), kek: k, clock: issuertest.NewClock(t0)}
	if err := c.open(p); err != nil {
		t.Fatal(err)
	}
	_, c.lab, _ = ed25519.GenerateKey(rand.Reader)
	if err := c.iss.AddAttester(context.Background(), "test", "lab", c.lab.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return c
}

// open (re)starts the issuer on the store, with p installed at start if set.
func (c *core) open(p *policy.Policy) error {
	c.t.Helper()
	if c.db != nil {
		c.db.Close()
	}
	db, err := boltstore.Open(c.dir, boltstore.Options{KEK: c.kek, Clock: c.clock})
	if err != nil {
		c.t.Fatal(err)
	}
	c.db = db
	c.t.Cleanup(func() { db.Close() })
	iss, err := issuer.New(context.Background(), issuer.Config{Store: db, State: db, Clock: c.clock, Policy: p})
	if err != nil {
		return err
	}
	c.iss = iss
	return nil
}

func (c *core) redeem() []string {
	c.t.Helper()
	now := c.clock.Now()
	att, err := attestation.Sign(c.lab, attestation.Claims{Attester: "lab", Kind: attestation.TestNegative, At: now.Add(-time.Hour).Unix(),
		Expires: now.Add(24 * time.Hour).Unix(), ID: randID(c.t)})
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := c.iss.Redeem(context.Background(), issuer.Request{Attestations: []string{att}})
	if err != nil {
		c.t.Fatal(err)
	}
	out := make([]string, len(b.Tokens))
	for n, tk := range b.Tokens {
		out[n] = tk.Token
	}
	return out
}

func randID(t *testing.T) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func (c *core) statusOf(kid string) string {
	for _, k := range c.iss.Keys() {
		if k.ID == kid {
			return k.Status
		}
	}
	return ""
}

func (c *core) signing() string {
	for _, k := range c.iss.Keys() {
		if k.Status == bundle.StatusCurrent {
			return k.ID
		}
	}
	return ""
}

// Revocation, for a key in each slot: the key leaves the bundle at once in
// a new, higher sequence and is listed as withdrawn, its private part
// leaves the store, the audit log names the admin, a new key signs at once
// if the revoked one was signing, and tokens of the other keys stay valid.
func TestRevokeKey(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// setup returns the kid to revoke.
		setup       func(c *core) string
		wantNewSign bool
	}{
		{"current", func(c *core) string { return c.signing() }, true},
		{"next", func(c *core) string {
			kid, _, err := c.iss.RotateKeys(ctx, "ops", false)
			if err != nil {
				t.Fatal(err)
			}
			return kid
		}, false},
		{"retired", func(c *core) string {
			old := c.signing()
			if _, _, err := c.iss.RotateKeys(ctx, "ops", true); err != nil {
				t.Fatal(err)
			}
			c.clock.Advance(time.Minute)
			if st := c.statusOf(old); st != bundle.StatusRetired {
				t.Fatalf("setup: old key is %q, want retired", st)
			}
			return old
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCore(t, nil)
			kid := tc.setup(c)
			signingBefore := c.signing()
			// A token of a key that is not revoked, to check it stays valid.
			var other []string
			if signingBefore != kid {
				other = c.redeem()
			}
			_, before := c.iss.Bundle()

			rev, err := c.iss.RevokeKey(ctx, "alice", kid)
			if err != nil {
				t.Fatal(err)
			}
			_, after := c.iss.Bundle()
			if rev.Revoked != kid || rev.Sequence != after.Sequence || after.Sequence <= before.Sequence {
				t.Fatalf("revocation %+v; bundle %d -> %d", rev, before.Sequence, after.Sequence)
			}
			if _, ok := after.Find(kid); ok {
				t.Fatalf("revoked key %s still in bundle %d", kid, after.Sequence)
			}
			if !slices.Equal(after.Withdrawn, []string{kid}) {
				t.Fatalf("bundle withdraws %v, want [%s]", after.Withdrawn, kid)
			}
			if c.statusOf(kid) != "" {
				t.Fatalf("revoked key still listed: %v", c.iss.Keys())
			}
			held, err := c.db.SigningKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range held {
				if k.ID == kid {
					t.Fatal("the store still holds the revoked key's private part")
				}
			}
			now := c.clock.Now()
			signing := c.signing()
			if signing == "" || signing == kid || rev.Signing != signing {
				t.Fatalf("signing key after revocation %q (revocation says %q)", signing, rev.Signing)
			}
			if tc.wantNewSign == (signing == signingBefore) {
				t.Fatalf("signing key %s before, %s after; a new one wanted: %v", signingBefore, signing, tc.wantNewSign)
			}
			if k, ok := after.Find(signing); !ok || k.Status != bundle.StatusCurrent {
				t.Fatalf("new bundle lacks the signing key %s as current", signing)
			}
			for _, tok := range c.redeem() {
				if kidOf(t, tok) != signing {
					t.Fatalf("a token after revocation is signed by %s, want %s", kidOf(t, tok), signing)
				}
				if _, err := verifier.Verify(tok, after, laterOf(t, tok, now)); err != nil {
					t.Fatalf("new token: %v", err)
				}
			}
			for _, tok := range other {
				if _, err := verifier.Verify(tok, after, laterOf(t, tok, now)); err != nil {
					t.Fatalf("a token of another key after the revocation: %v", err)
				}
			}
			entries, err := c.iss.Audit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			last := entries[len(entries)-1]
			if last.Admin != "alice" || last.Action != "keys.revoke" || !strings.HasPrefix(last.Detail, "key "+kid+" ("+tc.name+") revoked") {
				t.Fatalf("audit entry %+v", last)
			}

			// Errors: again, and a key that never was.
			_, err = c.iss.RevokeKey(ctx, "alice", kid)
			var ie *issuer.InputError
			if !errors.As(err, &ie) || ie.Kind != issuer.KindConflict || ie.Message != "key "+kid+" is already revoked" {
				t.Fatalf("second revocation: %v", err)
			}
			_, err = c.iss.RevokeKey(ctx, "alice", "nokey")
			if !errors.As(err, &ie) || ie.Kind != issuer.KindNotFound || ie.Message != `no signing key "nokey"` {
				t.Fatalf("unknown key: %v", err)
			}

			// A restart keeps the withdrawal; past the key's naf it leaves
			// the bundle and the store.
			if err := c.open(nil); err != nil {
				t.Fatal(err)
			}
			if _, b := c.iss.Bundle(); !slices.Equal(b.Withdrawn, []string{kid}) {
				t.Fatalf("after a restart the bundle withdraws %v", b.Withdrawn)
			}
			w, err := c.db.WithdrawnKeys(ctx)
			if err != nil || len(w) != 1 {
				t.Fatalf("withdrawals held: %v %v", w, err)
			}
			c.clock.Set(w[0].Until)
			if err := c.iss.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := c.iss.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if _, b := c.iss.Bundle(); len(b.Withdrawn) != 0 {
				t.Fatalf("at the key's naf the bundle still withdraws %v", b.Withdrawn)
			}
			if w, err := c.db.WithdrawnKeys(ctx); err != nil || len(w) != 0 {
				t.Fatalf("withdrawal past its naf still held: %v %v", w, err)
			}
		})
	}
}

// laterOf is the first instant at or after now at which tok is valid.
func laterOf(t *testing.T, tok string, now time.Time) time.Time {
	t.Helper()
	nbf, _ := claimsOf(t, tok)
	return later(now, time.Unix(nbf, 0))
}

// A policy given at start never rolls the stored one back.
func TestStartPolicyNeverRollsBack(t *testing.T) {
	ctx := context.Background()
	v := func(n int, name string) *policy.Policy {
		p := policy.Default()
		p.Version, p.Name = n, name
		return p
	}
	c := newCore(t, v(5, "five"))
	for _, tc := range []struct {
		p    *policy.Policy
		want string // error; "" for a start
		keep int    // the version in force afterwards
	}{
		{v(2, "two"), "issuer: the policy given at start has version 2, lower than the stored version 5: a start never rolls the policy back (give it a version above 5, or start without one to keep version 5)", 5},
		{v(5, "five, edited"), "issuer: the policy given at start has version 5, the stored version, but another content: give it a version above 5", 5},
		{v(5, "five"), "", 5},
		{nil, "", 5},
		{v(6, "six"), "", 6},
	} {
		auditBefore, _ := c.iss.Audit(ctx)
		err := c.open(tc.p)
		if tc.want != "" {
			if err == nil || err.Error() != tc.want {
				t.Fatalf("start with %v: %v, want %q", tc.p.Version, err, tc.want)
			}
			if err := c.open(nil); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if got := c.iss.Policy().Version; got != tc.keep {
			t.Fatalf("after a start with %v: version %d in force, want %d", tc.p, got, tc.keep)
		}
		rec, err := c.db.Policy(ctx)
		if err != nil || rec.Version != tc.keep {
			t.Fatalf("stored version %d, %v; want %d", rec.Version, err, tc.keep)
		}
		auditAfter, _ := c.iss.Audit(ctx)
		if installed := len(auditAfter) - len(auditBefore); installed != 0 && tc.keep == 5 {
			t.Fatalf("a refused or repeated policy left %d audit entries", installed)
		}
	}
}

func (c *core) key(kid string) issuer.KeyInfo {
	c.t.Helper()
	for _, k := range c.iss.Keys() {
		if k.ID == kid {
			return k
		}
	}
	c.t.Fatalf("no key %s", kid)
	return issuer.KeyInfo{}
}

func (c *core) next() string {
	for _, k := range c.iss.Keys() {
		if k.Status == bundle.StatusNext {
			return k.ID
		}
	}
	return ""
}

// The key schedule's paths, each on a fresh temp-dir store, without HTTP.
func TestKeySchedulePaths(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *core, p *policy.Policy)
	}{
		{"first start: one key signs at once, bounds from the policy", func(t *testing.T, c *core, p *policy.Policy) {
			if len(c.iss.Keys()) != 1 {
				t.Fatalf("%d keys at first start", len(c.iss.Keys()))
			}
			k := c.key(c.signing())
			g := p.Tokens.Granularity.D()
			l := p.Tokens.Lifetime
			longest := max(l.Green.D(), l.Yellow.D(), l.Red.D())
			if !k.ActiveAt.Equal(t0) || !k.NotAfter.Equal(t0.Add(p.Keys.Lifetime.D())) ||
				!k.DestroyAt.Equal(k.NotAfter.Add(p.Retention.RetiredKeys.D())) ||
				!k.NotBefore.Equal(t0.Add(-longest).Truncate(g)) {
				t.Fatalf("first key %+v", k)
			}
		}},
		{"rotation falls due: the next key is published a bundle lifetime ahead", func(t *testing.T, c *core, p *policy.Policy) {
			cur := c.key(c.signing())
			due := cur.ActiveAt.Add(p.Keys.Rotation.D() - p.Bundle.Lifetime.D())
			c.clock.Set(due.Add(-time.Minute))
			if err := c.iss.Maintain(ctx); err != nil || c.next() != "" {
				t.Fatalf("a next key before the rotation is due: %q %v", c.next(), err)
			}
			c.clock.Set(due)
			if err := c.iss.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			nk := c.key(c.next())
			if !nk.ActiveAt.Equal(cur.ActiveAt.Add(p.Keys.Rotation.D())) {
				t.Fatalf("next key signs from %s, want %s", nk.ActiveAt, cur.ActiveAt.Add(p.Keys.Rotation.D()))
			}
			if k, ok := bundleOf(c).Find(nk.ID); !ok || k.Status != bundle.StatusNext {
				t.Fatal("the next key is not in the bundle as next")
			}
			c.clock.Set(nk.ActiveAt)
			if err := c.iss.Maintain(ctx); err != nil || c.signing() != nk.ID || c.key(cur.ID).Status != bundle.StatusRetired {
				t.Fatalf("at its time the next key does not sign: %v %v", c.iss.Keys(), err)
			}
		}},
		{"scheduled rotation by hand, and a second one refused", func(t *testing.T, c *core, p *policy.Policy) {
			kid, at, err := c.iss.RotateKeys(ctx, "ops", false)
			if err != nil || !at.Equal(t0.Add(p.Bundle.Lifetime.D())) || c.next() != kid {
				t.Fatalf("RotateKeys = %s %s %v", kid, at, err)
			}
			_, _, err = c.iss.RotateKeys(ctx, "ops", false)
			want := "key " + kid + " is already published and signs from " + at.UTC().Format(time.RFC3339)
			var ie *issuer.InputError
			if !errors.As(err, &ie) || ie.Kind != issuer.KindConflict || ie.Message != want {
				t.Fatalf("second rotation: %v, want 409 %q", err, want)
			}
		}},
		{"immediate rotation: the new key signs at once", func(t *testing.T, c *core, p *policy.Policy) {
			old := c.signing()
			kid, at, err := c.iss.RotateKeys(ctx, "ops", true)
			if err != nil || !at.Equal(t0) || c.signing() != kid || c.key(old).Status != bundle.StatusRetired {
				t.Fatalf("immediate rotation: %s %s %v; keys %v", kid, at, err, c.iss.Keys())
			}
			for _, tok := range c.redeem() {
				if kidOf(t, tok) != kid {
					t.Fatalf("signed by %s, want %s", kidOf(t, tok), kid)
				}
			}
		}},
		{"downtime past the horizon: a key signs at once", func(t *testing.T, c *core, p *policy.Policy) {
			old := c.key(c.signing())
			c.clock.Set(old.NotAfter.Add(-p.Reach()).Add(time.Hour))
			if err := c.iss.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			if cur := c.key(c.signing()); cur.ID == old.ID || !cur.ActiveAt.Equal(c.clock.Now()) {
				t.Fatalf("after downtime: signing %+v", cur)
			}
		}},
		{"a retired key leaves the bundle at its naf and the store at DestroyAt", func(t *testing.T, c *core, p *policy.Policy) {
			old := c.key(c.signing())
			if _, _, err := c.iss.RotateKeys(ctx, "ops", true); err != nil {
				t.Fatal(err)
			}
			c.clock.Set(old.NotAfter)
			if err := c.iss.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := bundleOf(c).Find(old.ID); ok || c.key(old.ID).Status != "ended" {
				t.Fatal("an ended key is still in the bundle")
			}
			c.clock.Set(old.DestroyAt)
			if _, err := c.iss.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			for _, k := range c.iss.Keys() {
				if k.ID == old.ID {
					t.Fatal("key held past DestroyAt")
				}
			}
		}},
		{"tokens are trimmed to their key's naf", func(t *testing.T, c *core, p *policy.Policy) {
			// Down for five days: the next key is published late, so the
			// current key signs in its last days and its naf binds.
			k1 := c.key(c.signing())
			c.clock.Advance(5 * 24 * time.Hour)
			if err := c.iss.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			k2 := c.key(c.next())
			c.clock.Set(k2.ActiveAt.Add(-time.Hour))
			toks := c.redeem()
			lastExp := int64(0)
			for _, tok := range toks {
				nbf, exp := claimsOf(t, tok)
				if kidOf(t, tok) != k1.ID || exp > k1.NotAfter.Unix() || nbf < k1.NotBefore.Unix() {
					t.Fatalf("token %s..%s by %s outside key %s (%s..%s)", unix(nbf), unix(exp), kidOf(t, tok), k1.ID, k1.NotBefore, k1.NotAfter)
				}
				lastExp = max(lastExp, exp)
			}
			if len(toks) == 0 || lastExp == 0 {
				t.Fatal("empty batch")
			}
			if reach := c.clock.Now().Add(p.Reach()); !k1.NotAfter.Before(reach) {
				t.Fatalf("naf %s is not before the batch's reach %s: the test checks nothing", k1.NotAfter, reach)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policy.Default()
			// The least Validate allows, so that a key's naf binds.
			// A bundle lifetime shorter than the rotation, so that a
			// rotation falls due after the first start.
			p.Bundle.Lifetime = policy.Duration(3 * 24 * time.Hour)
			p.Keys.Lifetime = policy.Duration(max(p.Keys.Rotation.D(), p.Bundle.Lifetime.D()) + p.Reach())
			c := newCore(t, p)
			tc.run(t, c, p)
		})
	}
}

func bundleOf(c *core) *bundle.Bundle {
	_, b := c.iss.Bundle()
	return b
}
