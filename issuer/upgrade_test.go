package issuer_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

// A data directory from release 0 (internal/upgradetest/testdata/release0)
// opens with renewal in place: its stored policy, written before renewal
// and per-kind lifetimes, loads with the values that keep its meaning, and
// the attestation it redeemed is still refused in its period — with or
// without a secret, since release 0 stored none.
func TestRelease0OpensWithRenewal(t *testing.T) {
	release0 := filepath.Join("..", "internal", "upgradetest", "testdata", "release0")
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(release0, "data"))); err != nil {
		t.Fatal(err)
	}
	// CopyFS keeps no modes; the store wants its files private.
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		return os.Chmod(path, mode)
	}); err != nil {
		t.Fatal(err)
	}
	used, err := os.ReadFile(filepath.Join(release0, "redeemed.jws"))
	if err != nil {
		t.Fatal(err)
	}
	env := issuertest.Start(t, issuertest.WithDir(dir), issuertest.WithTime(time.Date(2026, 12, 1, 22, 30, 0, 0, time.UTC)))
	p := env.Issuer.Policy()
	h := 24 * time.Hour
	if p.Renewal != (policy.Renewal{Period: policy.Duration(7 * h), Overlap: policy.Duration(2 * h)}) {
		t.Fatalf("renewal %+v, want period 7d (the horizon) and overlap 2d", p.Renewal)
	}
	if got := p.Attestations.Lifetimes.Of("vaccination"); got != 72*time.Hour {
		t.Fatalf("vaccination lifetime %s, want release 0's max_lifetime 72h", got)
	}
	att := strings.TrimSpace(string(used))
	for _, s := range [][]byte{nil, secret(1)} {
		_, err := redeem(env, s, att)
		wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	}
	// Its last accepted second (exp 21:56:05 + 5m skew): still refused, its
	// record lives to the deadline release 0 gave it (23:00); after that
	// the attestation has expired, so it never redeems twice.
	env.Clock.Set(time.Date(2026, 12, 4, 22, 1, 4, 0, time.UTC))
	_, err = redeem(env, nil, att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	env.Clock.Set(time.Date(2026, 12, 4, 23, 0, 0, 0, time.UTC))
	_, err = redeem(env, nil, att)
	wantRefused(t, err, issuer.KindRefused, "attestation_expired", 0, "expired")
	// The moved record goes with its partition, at the end of its
	// deadline's epoch (the next midnight): counted as absent since 23:00.
	if n := replayCount(t, env); n != 1 {
		t.Fatalf("%d replay records before the sweep, want release 0's one", n)
	}
	env.Clock.Set(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
	if _, err := env.DB.Sweep(context.Background(), env.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	if n := replayCount(t, env); n != 0 {
		t.Fatalf("%d replay records after their deadline and a sweep", n)
	}
}

func replayCount(t *testing.T, env *issuertest.Env) int {
	t.Helper()
	cats, err := env.DB.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cats {
		if c.Name == issuer.CategoryReplay {
			return c.Count
		}
	}
	t.Fatal("no replay category in the inventory")
	return 0
}
