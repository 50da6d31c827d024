package issuer_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// The crash test re-runs this test binary as a helper process: an issuer
// that records a redemption and is killed with SIGKILL after the commit and
// before its answer is made.
const (
	crashHelperEnv = "ISSUER_CRASH_HELPER" // the data directory
	crashAttEnv    = "ISSUER_CRASH_ATTESTATION"
	crashSecretEnv = "ISSUER_CRASH_SECRET"
	crashSeedEnv   = "ISSUER_CRASH_ATTESTER_SEED"
	crashAttester  = "crash-lab"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		crashHelper(dir)
		os.Exit(3) // not reached: the helper is killed
	}
	os.Exit(m.Run())
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

// killAfterCommit is the store of the helper: once a redemption is durable
// the process dies, before the issuer can sign or answer.
type killAfterCommit struct{ issuer.Store }

func (s killAfterCommit) Redeem(ctx context.Context, r issuer.Redemption) (issuer.RedeemResult, error) {
	res, err := s.Store.Redeem(ctx, r)
	if err == nil {
		fmt.Println("committed")
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal arrives
	}
	return res, err
}

func crashHelper(dir string) {
	fail := func(what string, err error) {
		fmt.Fprintln(os.Stderr, "helper:", what+":", err)
		os.Exit(4)
	}
	ctx := context.Background()
	key, _, err := kek.LoadOrCreate(filepath.Clean(dir) + ".kek")
	if err != nil {
		fail("kek", err)
	}
	clock := fixedClock{rt0}
	db, err := boltstore.Open(dir, boltstore.Options{KEK: key, Clock: clock})
	if err != nil {
		fail("open", err)
	}
	iss, err := issuer.New(ctx, issuer.Config{Store: killAfterCommit{db}, State: db, Clock: clock})
	if err != nil {
		fail("issuer", err)
	}
	seed, _ := hex.DecodeString(os.Getenv(crashSeedEnv))
	if err := iss.AddAttester(ctx, "test", crashAttester, ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)); err != nil {
		fail("attester", err)
	}
	secret, _ := base64.RawURLEncoding.DecodeString(os.Getenv(crashSecretEnv))
	_, err = iss.Redeem(ctx, issuer.Request{Attestations: []string{os.Getenv(crashAttEnv)}, Secret: secret})
	fail("redeem returned", err)
}

// Issue 12 item 2: the issuer dies after the commit, before the answer.
// The attestation is spent for this period, yet the wallet that holds the
// secret gets its codes by retrying; a stranger holding only the
// attestation gets 409.
func TestRetryAfterTheIssuerDiesAfterTheCommit(t *testing.T) {
	dir := t.TempDir()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 42
	lab := ed25519.NewKeyFromSeed(seed)
	att, err := attestation.Sign(lab, attestation.Claims{Attester: crashAttester, Kind: attestation.Vaccination,
		At: rt0.Add(-30 * 24 * time.Hour).Unix(), Expires: rt0.Add(150 * 24 * time.Hour).Unix(), ID: "dose-1"})
	if err != nil {
		t.Fatal(err)
	}
	wallet := secret(0x5a)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+dir, crashAttEnv+"="+att,
		crashSecretEnv+"="+base64.RawURLEncoding.EncodeToString(wallet), crashSeedEnv+"="+hex.EncodeToString(seed))
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper: %v, output %q", err, out)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL || string(out) != "committed\n" {
		t.Fatalf("helper ended with %v, output %q, stderr %q; want SIGKILL after the commit", err, out, ee.Stderr)
	}

	// The issuer comes back on the same data directory.
	env := issuertest.Start(t, issuertest.WithDir(dir), issuertest.WithTime(rt0.Add(2*time.Minute)))
	_, err = redeem(env, nil, att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	_, err = redeem(env, secret(0x01), att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	b, err := redeem(env, wallet, att)
	if err != nil {
		t.Fatalf("the wallet's retry: %v", err)
	}
	p := env.Issuer.Policy()
	ws := windowsOf(t, env, b)
	hour := rt0.Truncate(time.Hour)
	if !b.Retry || !b.RenewAfter.Equal(hour.Add(p.Renewal.Period.D())) || !ws[len(ws)-1].exp.Equal(hour.Add(p.Reach())) {
		t.Fatalf("retry %v, renew_after %s, batch ends %s: want the lost batch's", b.Retry, b.RenewAfter, ws[len(ws)-1].exp)
	}
}
