package boltstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

// The release-0 fixture: demo-lab's attestation RbETJW3SMrYIgoZHy-Wunw was
// redeemed once; its record lives until 2026-12-04T22:00Z under the epoch
// key epochs/1796428800.key.
const (
	release0Dir      = "../../internal/upgradetest/testdata/release0/data"
	release0Attester = "demo-lab"
	release0ID       = "RbETJW3SMrYIgoZHy-Wunw"
	release0End      = 1796428800
)

var release0Now = time.Date(2026, 12, 1, 22, 30, 0, 0, time.UTC)

func copyFixture(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestUpgradeFromRelease0(t *testing.T) {
	dir := copyFixture(t, release0Dir)
	oldKey, err := os.ReadFile(filepath.Join(dir, "epochs", "1796428800.key"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, oldKey)
	m.Write([]byte(release0Attester + "\x00" + release0ID))
	oldHash := m.Sum(nil)[:replayHashSize]
	if len(hits(t, dir, []pattern{{"old record hash", oldHash}})) == 0 {
		t.Fatal("control: the release-0 record is not in the fixture")
	}

	clock := &fakeClock{t: release0Now}
	ctx := context.Background()
	for round := range 2 { // the second Open finds the upgrade done
		s := openTest(t, dir, clock)
		redeemed := issuer.ReplayKey{Attester: release0Attester, ID: release0ID, Deadline: time.Date(2026, 12, 4, 22, 0, 0, 0, time.UTC)}
		wantRedeemed(t, s.Redeemed(ctx, []issuer.ReplayKey{redeemed}, 0), 0)
		// Another expiry for the same attestation finds the same record.
		redeemed.Deadline = redeemed.Deadline.Add(48 * time.Hour)
		r := redemption(release0Attester, redeemed.Deadline, release0ID)
		r.Day = day(release0Now)
		wantRedeemed(t, errOf(s.Redeem(ctx, r)), 0)
		fresh := redemption(release0Attester, redeemed.Deadline, "fresh-after-upgrade")
		fresh.Day = day(release0Now)
		if round == 0 {
			if err := errOf(s.Redeem(ctx, fresh)); err != nil {
				t.Fatalf("a fresh attestation after the upgrade: %v", err)
			}
		} else {
			wantRedeemed(t, errOf(s.Redeem(ctx, fresh)), 0)
		}
		atts, err := s.Attesters(ctx)
		if err != nil || len(atts) != 1 || atts[0].ID != release0Attester {
			t.Fatalf("attesters after the upgrade: %v, %v", atts, err)
		}
		inv, err := s.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 + 1; inv[0].Count != want {
			t.Fatalf("replay records after the upgrade: %+v, want %d", inv[0], want)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The old key file and directory are gone; the partition's key is the
	// old key, sealed; the main file holds no trace of the old record.
	if _, err := os.Stat(filepath.Join(dir, "epochs")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("release-0 epoch key directory still there: %v", err)
	}
	sealed, err := os.ReadFile(filepath.Join(dir, "replay", "1796428800.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !kek.IsSealed(sealed) {
		t.Fatal("migrated partition key is not sealed")
	}
	if got := partitionKey(t, dir, release0End); !hmac.Equal(got, oldKey) {
		t.Fatal("the partition key is not the release-0 epoch key")
	}
	if h := hits(t, dir, []pattern{{"raw epoch key", oldKey}}); len(h) != 0 {
		t.Fatalf("raw release-0 epoch key still on disk: %v", h)
	}
	main, err := os.ReadFile(filepath.Join(dir, "healthcode.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(main, oldHash) {
		t.Fatal("the old replay record is still in healthcode.db")
	}
}
