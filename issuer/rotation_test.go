package issuer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/verifier"
)

// On the hour, so that the schedule's instants are easy to read in failures.
var t0 = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct{ Kid string }
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

func keyInfo(t *testing.T, iss *issuer.Issuer, kid string) (issuer.KeyInfo, bool) {
	t.Helper()
	for _, k := range iss.Keys() {
		if k.ID == kid {
			return k, true
		}
	}
	return issuer.KeyInfo{}, false
}

func claimsOf(t *testing.T, tok string) (nbf, exp int64) {
	t.Helper()
	p, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Nbf, Exp int64 }
	if err := json.Unmarshal(p, &c); err != nil {
		t.Fatal(err)
	}
	return c.Nbf, c.Exp
}

// checkBatch asserts what every token of a batch must satisfy under the
// bundle published when it was issued: signed by wantKid, exp at or before
// its key's naf, nbf at or after its key's nbf, and verifying offline.
func checkBatch(t *testing.T, toks []string, b *bundle.Bundle, wantKid string, now time.Time) {
	t.Helper()
	if len(toks) == 0 {
		t.Fatal("empty batch")
	}
	for n, tok := range toks {
		kid := kidOf(t, tok)
		if kid != wantKid {
			t.Fatalf("token %d signed by %s, want %s", n, kid, wantKid)
		}
		k, ok := b.Find(kid)
		if !ok {
			t.Fatalf("token %d: key %s is not in the bundle", n, kid)
		}
		nbf, exp := claimsOf(t, tok)
		if exp > k.NotAfter || nbf < k.NotBefore {
			t.Fatalf("token %d valid %s..%s outlives key %s (%s..%s)", n, unix(nbf), unix(exp), kid, unix(k.NotBefore), unix(k.NotAfter))
		}
		at := later(now, time.Unix(nbf, 0))
		if _, err := verifier.Verify(tok, b, at); err != nil {
			t.Fatalf("token %d at %s: %v", n, at, err)
		}
	}
}

func unix(s int64) string { return time.Unix(s, 0).UTC().Format(time.RFC3339) }

// A full rotation under the default policy, hour by hour, as Run would
// drive it (Maintain, Sweep), over 61 days. It checks SPIRE's rules: the
// next key is published a whole bundle lifetime before it signs (so every
// bundle that lacks it has expired by then), the new key signs from
// keys.rotation on, a retired key stays in the bundle until its naf and then
// leaves, its private part is destroyed at DestroyAt by the sweep, and an
// offline verifier synced while the next key was only published verifies
// the new key's tokens until its own bundle expires.
func TestKeyRotationFullCycle(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(t0))
	p := env.Issuer.Policy()
	iss := env.Issuer
	rotation, bundleLife := p.Keys.Rotation.D(), p.Bundle.Lifetime.D()

	// First start: one key, signing now, in the bundle.
	keys := iss.Keys()
	if len(keys) != 1 || keys[0].Status != bundle.StatusCurrent || !keys[0].ActiveAt.Equal(t0) {
		t.Fatalf("after start: %+v", keys)
	}
	k1 := keys[0]
	// A verifier syncs before the next key exists.
	before, err := bundle.Accept(env.BundleRaw(t), env.Pin, nil, t0)
	if err != nil {
		t.Fatal(err)
	}

	// seen records every bundle issued, by sequence; published, when each
	// key first appeared in one.
	seen := map[uint64]*bundle.Bundle{}
	published := map[string]time.Time{}
	private := map[string][]byte{}
	sealed := map[string][]byte{} // the sealed copy as it lies on disk
	observe := func() *bundle.Bundle {
		t.Helper()
		raw, b := iss.Bundle()
		if _, err := bundle.Open(raw, env.Pin); err != nil {
			t.Fatalf("served bundle does not open: %v", err)
		}
		seen[b.Sequence] = b
		now := env.Clock.Now()
		held, err := env.DB.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range held {
			if _, ok := private[k.ID]; !ok {
				private[k.ID] = bytes.Clone(k.Private)
				if sealed[k.ID] = issuertest.SealedKeyOnDisk(t, env.Dir, k.ID); sealed[k.ID] == nil {
					t.Fatalf("no sealed copy of key %s on disk", k.ID)
				}
			}
		}
		for _, k := range iss.Keys() {
			_, inBundle := b.Find(k.ID)
			if _, ok := published[k.ID]; !ok {
				published[k.ID] = now
			}
			// Published from the moment it exists until its naf.
			if want := now.Before(k.NotAfter); inBundle != want {
				t.Fatalf("at %s key %s (naf %s) in bundle: %v, want %v", now, k.ID, k.NotAfter, inBundle, want)
			}
			// Held until DestroyAt, checked after each sweep below.
			if !now.Before(k.DestroyAt.Add(time.Hour)) {
				t.Fatalf("at %s key %s still held, destroy at %s", now, k.ID, k.DestroyAt)
			}
		}
		return b
	}
	sync := func() {
		if err := iss.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		observe()
	}

	// The next key is published at once, to sign one rotation later: that
	// is at least one bundle lifetime away, so no bundle without it is
	// still valid when it signs.
	sync()
	var k2 issuer.KeyInfo
	for _, k := range iss.Keys() {
		if k.ID != k1.ID {
			k2 = k
		}
	}
	if k2.ID == "" || k2.Status != bundle.StatusNext {
		t.Fatalf("no next key after Maintain: %+v", iss.Keys())
	}
	if !k2.ActiveAt.Equal(k1.ActiveAt.Add(rotation)) {
		t.Fatalf("next key signs from %s, want %s (keys.rotation after the current one)", k2.ActiveAt, k1.ActiveAt.Add(rotation))
	}
	if !before.Expired(k2.ActiveAt) {
		t.Fatalf("a bundle without the next key is valid until %s, after it signs at %s", unix(before.Expires), k2.ActiveAt)
	}
	if _, ok := env.Bundle(t).Find(k2.ID); !ok {
		t.Fatal("next key not in the served bundle")
	}

	var offline *bundle.Bundle // synced mid-way, while k2 is only published
	var lastOld []string       // batch redeemed just before k2 signs
	var lastOldBundle *bundle.Bundle
	k1Gone, k1Destroyed := false, false
	step := time.Hour
	for now := env.Clock.Now(); now.Before(k1.DestroyAt.Add(2 * step)); now = env.Clock.Now() {
		env.Clock.Advance(step)
		now = env.Clock.Now()
		if err := iss.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if now.Sub(t0)%(6*time.Hour) == 0 || !now.Before(k1.NotAfter) && !k1Destroyed {
			if _, err := iss.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
		}
		b := observe()

		switch {
		case now.Equal(t0.Add(3 * 24 * time.Hour)):
			offline, err = bundle.Accept(env.BundleRaw(t), env.Pin, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := offline.Find(k2.ID); !ok || k.Status != bundle.StatusNext {
				t.Fatalf("offline bundle lacks the next key: %+v", offline.Keys)
			}
		case now.Equal(k2.ActiveAt.Add(-step)):
			// The last hour of k1: every token of the batch is k1's and
			// none outlives it.
			_, lastOld = env.Redeem(t, env.Attest(t, attestation.TestNegative, now, ""))
			lastOldBundle = b
			checkBatch(t, lastOld, b, k1.ID, now)
		case now.Equal(k2.ActiveAt):
			// keys.rotation after k1 began, k2 signs; k1 is retired but
			// published, and the batch just before still verifies.
			if k, _ := keyInfo(t, iss, k2.ID); k.Status != bundle.StatusCurrent {
				t.Fatalf("at %s k2 is %s", now, k.Status)
			}
			if k, _ := keyInfo(t, iss, k1.ID); k.Status != bundle.StatusRetired {
				t.Fatalf("at %s k1 is %s", now, k.Status)
			}
			checkBatch(t, lastOld[len(lastOld)-1:], b, k1.ID, now)
			_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, now, ""))
			checkBatch(t, toks, b, k2.ID, now)

			// The offline verifier never synced again: it verifies k2's
			// tokens until its own bundle expires, then refuses them.
			last := time.Unix(offline.Expires, 0).Add(-time.Second)
			covered := 0
			for _, tok := range toks {
				nbf, exp := claimsOf(t, tok)
				for _, at := range []time.Time{later(now, time.Unix(nbf, 0)), time.Unix(exp, 0).Add(-time.Second)} {
					if !at.Before(time.Unix(offline.Expires, 0)) {
						continue
					}
					if _, err := verifier.Verify(tok, offline, at); err != nil {
						t.Fatalf("offline verifier at %s: %v", at, err)
					}
				}
				if nbf <= last.Unix() && last.Unix() < exp {
					covered++
					if _, err := verifier.Verify(tok, offline, last); err != nil {
						t.Fatalf("offline verifier in its bundle's last second: %v", err)
					}
					if _, err := verifier.Verify(tok, offline, last.Add(time.Second)); !errors.Is(err, verifier.ErrBundleExpired) {
						t.Fatalf("offline verifier after its bundle expired: %v", err)
					}
				}
			}
			if covered == 0 {
				t.Fatalf("no k2 token covers %s: the test checks nothing", last)
			}
			// The verifier synced before k2 was published holds an
			// expired bundle now: it refuses for that reason, never
			// because of an unknown key.
			if _, err := verifier.Verify(toks[0], before, now); !errors.Is(err, verifier.ErrBundleExpired) {
				t.Fatalf("pre-publication bundle: %v, want ErrBundleExpired", err)
			}
		case now.Equal(k1.NotAfter.Add(-step)):
			if _, ok := b.Find(k1.ID); !ok {
				t.Fatal("k1 left the bundle before its naf")
			}
			if _, ok := keyInfo(t, iss, k1.ID); !ok {
				t.Fatal("k1 destroyed before its naf")
			}
		case now.Equal(k1.NotAfter):
			// Every token k1 signed has expired: it leaves the bundle,
			// its private part is still held until DestroyAt.
			if _, ok := b.Find(k1.ID); ok {
				t.Fatal("k1 still in the bundle at its naf")
			}
			if k, ok := keyInfo(t, iss, k1.ID); !ok || k.Status != "ended" {
				t.Fatalf("k1 at naf: %+v %v", k, ok)
			}
			k1Gone = true
			for _, tok := range lastOld {
				if _, exp := claimsOf(t, tok); exp > k1.NotAfter.Unix() {
					t.Fatalf("a k1 token expires %s, after k1 left the bundle", unix(exp))
				}
			}
			// The bundle the batch was checked under is long expired.
			if !lastOldBundle.Expired(now) {
				t.Fatal("bundle of the last k1 batch is still valid at k1's naf")
			}
		case now.Equal(k1.DestroyAt.Add(-step)):
			if _, ok := keyInfo(t, iss, k1.ID); !ok {
				t.Fatal("k1 destroyed before DestroyAt")
			}
			// The private part is sealed: never on disk in the plain.
			if dirHolds(t, env.Dir, private[k1.ID]) {
				t.Fatal("the data directory holds k1's private part unsealed")
			}
			// The control for the scan below: the sealed copy is found while held.
			if !dirHoldsBytes(t, env.Dir, sealed[k1.ID]) {
				t.Fatal("the data directory scan does not find k1's sealed private part while it is held")
			}
		case !now.Before(k1.DestroyAt) && !k1Destroyed:
			if _, ok := keyInfo(t, iss, k1.ID); ok {
				t.Fatalf("k1 held after the sweep at DestroyAt %s", k1.DestroyAt)
			}
			if dirHolds(t, env.Dir, private[k1.ID]) || dirHoldsBytes(t, env.Dir, sealed[k1.ID]) {
				t.Fatalf("the data directory still holds k1's private part after DestroyAt %s", k1.DestroyAt)
			}
			k1Destroyed = true
		}
	}
	if !k1Gone || !k1Destroyed || offline == nil {
		t.Fatalf("the schedule did not run its course: gone %v destroyed %v", k1Gone, k1Destroyed)
	}

	// Publication lead for every key that was scheduled: every bundle
	// issued before the key appeared has expired when it signs.
	scheduled := 0
	for _, k := range iss.Keys() {
		pub, ok := published[k.ID]
		if !ok || !k.ActiveAt.After(pub) {
			continue
		}
		scheduled++
		if lead := k.ActiveAt.Sub(pub); lead < bundleLife {
			t.Fatalf("key %s published %s before it signs, less than a bundle lifetime", k.ID, lead)
		}
		for seq, b := range seen {
			if _, has := b.Find(k.ID); !has && time.Unix(b.IssuedAt, 0).Before(pub) && !b.Expired(k.ActiveAt) {
				t.Fatalf("bundle %d without key %s is valid until %s, after the key signs at %s", seq, k.ID, unix(b.Expires), k.ActiveAt)
			}
		}
	}
	if scheduled < 3 {
		t.Fatalf("%d scheduled keys over 61 days, want at least 3", scheduled)
	}
}

// dirHolds reports whether any file under dir holds priv, raw or as the
// base64 the store writes, or its seed half.
func dirHolds(t *testing.T, dir string, priv []byte) bool {
	t.Helper()
	if len(priv) != 64 {
		t.Fatal("no private key recorded")
	}
	return len(forensic.Hits(t, dir, []forensic.Pattern{
		{What: "private key", Bytes: priv},
		{What: "seed", Bytes: priv[:32]},
		{What: "base64 private key", Bytes: []byte(base64.StdEncoding.EncodeToString(priv))},
		{What: "base64 seed", Bytes: []byte(base64.StdEncoding.EncodeToString(priv[:30]))},
	})) > 0
}

func dirHoldsBytes(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	return len(forensic.Hits(t, dir, []forensic.Pattern{{What: "bytes", Bytes: b}})) > 0
}

// No token outlives its key, where that binds: the issuer was down when the
// next key should have been published, so the current key signs on past
// keys.rotation and its naf cuts the batch short. Every token of the batch
// redeemed in the key's last hour ends at or before the naf.
func TestNoTokenOutlivesItsKey(t *testing.T) {
	ctx := context.Background()
	p := policy.Default()
	p.Keys.Lifetime = p.Keys.Rotation + p.Tokens.Horizon + p.Renewal.Overlap // the least Validate allows
	env := issuertest.Start(t, issuertest.WithTime(t0), issuertest.WithPolicy(p))
	k1 := env.Issuer.Keys()[0]

	// Down for five days: the next key is published late, and signs one
	// bundle lifetime after that.
	env.Clock.Advance(5 * 24 * time.Hour)
	if err := env.Issuer.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	var k2 issuer.KeyInfo
	for _, k := range env.Issuer.Keys() {
		if k.Status == bundle.StatusNext {
			k2 = k
		}
	}
	if want := env.Clock.Now().Add(p.Bundle.Lifetime.D()); !k2.ActiveAt.Equal(want) {
		t.Fatalf("late next key signs from %s, want %s", k2.ActiveAt, want)
	}
	env.Clock.Set(k2.ActiveAt.Add(-time.Hour))
	if err := env.Issuer.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	now := env.Clock.Now()
	// Vaccination: green for 180 days, so only the horizon and the key
	// bound the batch.
	_, toks := env.Redeem(t, env.Attest(t, attestation.Vaccination, now.Add(-30*24*time.Hour), ""))
	b := env.Bundle(t)
	checkBatch(t, toks, b, k1.ID, now)
	_, lastExp := claimsOf(t, toks[len(toks)-1])
	// Whole windows past the naf are dropped, no more.
	if life := p.Tokens.Lifetime.Green.D(); lastExp > k1.NotAfter.Unix() || lastExp <= k1.NotAfter.Add(-life).Unix() {
		t.Fatalf("batch ends %s, want within one window before the key's naf %s", unix(lastExp), k1.NotAfter)
	}
	if horizon := now.Add(p.Reach()); !k1.NotAfter.Before(horizon) {
		t.Fatalf("naf %s is not before the horizon %s: the test checks nothing", k1.NotAfter, horizon)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// A policy change that lengthens a colour's lifetime moves the window grid:
// the first window may then start before the current key's nbf, which was
// set under the old policy. Redemption must still work, with every token
// inside its key's window.
func TestRedeemAfterLifetimeGrows(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(t0))
	k1 := env.Issuer.Keys()[0]
	for n, life := range []string{"2d", "3d"} {
		p := policy.Default()
		p.Version = 2 + n
		d, err := policy.ParseDuration(life)
		if err != nil {
			t.Fatal(err)
		}
		p.Tokens.Lifetime.Green = d
		if err := env.Issuer.SetPolicy(ctx, "test", p); err != nil {
			t.Fatal(err)
		}
		now := env.Clock.Now()
		_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, now, ""))
		checkBatch(t, toks, env.Bundle(t), k1.ID, now)
		env.Clock.Advance(time.Hour)
	}
}

// An immediate rotation (a compromised key) signs at once, even when the
// clock has not moved since the key it replaces became current: repeated,
// since the tie was once broken by an unstable sort.
func TestImmediateRotationSignsAtOnce(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(t0))
	for n := 0; n < 6; n++ {
		kid, at, err := env.Issuer.RotateKeys(ctx, "test", true)
		if err != nil {
			t.Fatal(err)
		}
		if !at.Equal(t0) {
			t.Fatalf("immediate key signs from %s, want now %s", at, t0)
		}
		if k, _ := keyInfo(t, env.Issuer, kid); k.Status != bundle.StatusCurrent {
			t.Fatalf("rotation %d: immediate key is %s", n, k.Status)
		}
		_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
		checkBatch(t, toks, env.Bundle(t), kid, t0)
	}
}
