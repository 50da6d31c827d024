package boltstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

// testKEK is fixed, not drawn, so that the crash tests' helper processes
// open what their parent wrote.
var testKEK = mustKEK(bytes.Repeat([]byte{0x4b}, kek.Size))

func mustKEK(raw []byte) *kek.Key {
	k, err := kek.New(raw)
	if err != nil {
		panic(err)
	}
	return k
}

func otherKEK(t testing.TB) *kek.Key {
	t.Helper()
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSigningKey(t testing.TB, id string) issuer.SigningKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return issuer.SigningKey{ID: id, Private: priv, Created: t0, ActiveAt: t0, NotBefore: t0,
		NotAfter: t0.Add(48 * time.Hour), DestroyAt: t0.Add(96 * time.Hour)}
}

// privatePatterns are the secret halves (the seeds) of the keys: a disk
// thief who found one could sign.
func privatePatterns(bundleKey ed25519.PrivateKey, keys ...issuer.SigningKey) []pattern {
	ps := []pattern{{"bundle key seed", bundleKey.Seed()}}
	for _, k := range keys {
		ps = append(ps, pattern{"signing key " + k.ID + " seed", k.Private.Seed()})
	}
	return ps
}

func TestOpenRequiresKEK(t *testing.T) {
	_, err := Open(t.TempDir(), Options{})
	if want := "boltstore: Options.KEK is required: the private keys in the store are sealed under it"; err == nil || err.Error() != want {
		t.Fatalf("Open without a KEK = %v, want %q", err, want)
	}
}

// TestForensicNoPrivateKeyBytes: a copy of the data directory holds no
// private key byte, neither while the store is open nor after it closed.
func TestForensicNoPrivateKeyBytes(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	k1, k2 := newSigningKey(t, "k1"), newSigningKey(t, "k2")
	_, bk, _ := ed25519.GenerateKey(rand.Reader)
	for _, k := range []issuer.SigningKey{k1, k2} {
		if err := s.PutSigningKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutBundleKey(ctx, bk); err != nil {
		t.Fatal(err)
	}
	ps := privatePatterns(bk, k1, k2)
	if got := hits(t, dir, ps); len(got) > 0 {
		t.Fatalf("open store: private key bytes found: %v", got)
	}
	// The store still reads them back whole.
	got, err := s.SigningKeys(ctx)
	if err != nil || len(got) != 2 || !got[0].Private.Equal(k1.Private) || !got[1].Private.Equal(k2.Private) {
		t.Fatalf("SigningKeys = %v, %v", got, err)
	}
	if b, err := s.BundleKey(ctx); err != nil || !b.Equal(bk) {
		t.Fatalf("BundleKey = %v", err)
	}
	s.Close()
	if got := hits(t, dir, ps); len(got) > 0 {
		t.Fatalf("closed store: private key bytes found: %v", got)
	}
}

func TestOpenRefusesAnotherKEK(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	k1 := newSigningKey(t, "k1")
	if err := s.PutSigningKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	s.Close()

	wrong := otherKEK(t)
	_, err := Open(dir, Options{KEK: wrong})
	if !errors.Is(err, kek.ErrWrongKEK) {
		t.Fatalf("Open with another KEK = %v, want kek.ErrWrongKEK", err)
	}
	want := "boltstore: cannot open the keys in " + dir + ": kek: sealed under a different key-encryption key (blob sealed under KEK " +
		testKEK.ID() + ", this KEK is " + wrong.ID() + ")"
	if err.Error() != want {
		t.Fatalf("message:\n got %q\nwant %q", err, want)
	}
	// Nothing was changed: the right KEK still opens every key.
	s = openTest(t, dir, nil)
	got, err := s.SigningKeys(ctx)
	if err != nil || len(got) != 1 || !got[0].Private.Equal(k1.Private) {
		t.Fatalf("after a refused Open: %v, %v", got, err)
	}
}

// TestSealedKeyBoundToItsRecord: a sealed private key copied into another
// record does not open there (the aad names the record).
func TestSealedKeyBoundToItsRecord(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	for _, id := range []string{"k1", "k2"} {
		if err := s.PutSigningKey(ctx, newSigningKey(t, id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategorySigningKeys)
		recs := map[string][]byte{}
		var stored []storedSigningKey
		if err := b.ForEach(func(k, v []byte) error {
			var sk storedSigningKey
			if err := json.Unmarshal(v[8:], &sk); err != nil {
				return err
			}
			recs[sk.ID] = bytes.Clone(k)
			stored = append(stored, sk)
			return nil
		}); err != nil {
			return err
		}
		stored[0].Sealed, stored[1].Sealed = stored[1].Sealed, stored[0].Sealed
		for _, sk := range stored {
			out, _ := json.Marshal(sk)
			if err := b.Put(recs[sk.ID], s.value(out)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := s.SigningKeys(ctx)
	if !errors.Is(err, kek.ErrCorrupt) || !strings.HasPrefix(err.Error(), "boltstore: open sealed signing key k1: ") {
		t.Fatalf("swapped sealed keys: %v, want kek.ErrCorrupt for k1", err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// release0Keys reads the plain keys of a release-0 file directly, as a
// thief would have.
func release0Keys(t *testing.T, path string) (ed25519.PrivateKey, map[string]ed25519.PrivateKey) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var bk ed25519.PrivateKey
	keys := map[string]ed25519.PrivateKey{}
	if err := db.View(func(tx *bolt.Tx) error {
		bk = bytes.Clone(tx.Bucket([]byte(issuer.CategoryConfiguration)).Get(cfgBundleKey)[8:])
		return tx.Bucket([]byte(issuer.CategorySigningKeys)).ForEach(func(_, v []byte) error {
			var sk storedSigningKey
			if err := json.Unmarshal(v[8:], &sk); err != nil {
				return err
			}
			keys[sk.ID] = sk.Private
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if len(bk) != ed25519.PrivateKeySize || len(keys) == 0 {
		t.Fatalf("release 0 holds no plain keys: bundle key %d bytes, %d signing keys", len(bk), len(keys))
	}
	return bk, keys
}

// TestUpgradeSealsRelease0Keys: the first Open with a KEK of a data
// directory written before sealing seals its keys, keeping the bundle
// fingerprint and every kid, and leaves no plain key byte on disk.
func TestUpgradeSealsRelease0Keys(t *testing.T) {
	release0 := filepath.Join("..", "..", "internal", "upgradetest", "testdata", "release0")
	dir := t.TempDir()
	copyDir(t, filepath.Join(release0, "data"), dir)
	fp, err := os.ReadFile(filepath.Join(release0, "fingerprint.txt"))
	if err != nil {
		t.Fatal(err)
	}
	plainBundle, plainKeys := release0Keys(t, filepath.Join(dir, fileName))
	var ps []pattern
	ps = append(ps, pattern{"bundle key seed", plainBundle.Seed()})
	for id, k := range plainKeys {
		ps = append(ps, pattern{"signing key " + id + " seed", k.Seed()})
	}
	if got := hits(t, dir, ps); len(got) == 0 {
		t.Fatal("the release-0 copy should hold the plain keys before the upgrade")
	}

	clock := &fakeClock{t: time.Date(2026, 12, 1, 22, 30, 0, 0, time.UTC)}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	bk, err := s.BundleKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := bundle.Fingerprint(bk.Public().(ed25519.PublicKey)); got != strings.TrimSpace(string(fp)) {
		t.Fatalf("fingerprint after upgrade %s, want %s", got, fp)
	}
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(plainKeys) {
		t.Fatalf("%d signing keys after upgrade, want %d", len(keys), len(plainKeys))
	}
	for _, k := range keys {
		if !k.Private.Equal(plainKeys[k.ID]) {
			t.Errorf("signing key %s changed in the upgrade", k.ID)
		}
	}
	if got := hits(t, dir, ps); len(got) > 0 {
		t.Fatalf("after the upgrade, plain private key bytes remain: %v", got)
	}
	s.Close()
	if _, err := Open(dir, Options{KEK: otherKEK(t)}); !errors.Is(err, kek.ErrWrongKEK) {
		t.Fatalf("upgraded store opened with another KEK: %v", err)
	}
}

// TestRotateKEK: after a rotation only the new KEK opens the store, every
// key is the same, and no blob sealed under the old KEK stays on disk.
func TestRotateKEK(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	k1 := newSigningKey(t, "k1")
	_, bk, _ := ed25519.GenerateKey(rand.Reader)
	if err := s.PutSigningKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBundleKey(ctx, bk); err != nil {
		t.Fatal(err)
	}
	// Two replay partitions, so two partition keys sealed under the KEK.
	d1, d2 := t0.Add(time.Hour), t0.Add(48*time.Hour)
	for _, r := range []issuer.Redemption{redemption("lab", d1, "a"), redemption("lab", d2, "b")} {
		if err := errOf(s.Redeem(ctx, r)); err != nil {
			t.Fatal(err)
		}
	}
	var oldBlobs []pattern
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		oldBlobs = append(oldBlobs, pattern{"bundle key sealed under the old KEK", bytes.Clone(bucket(tx, issuer.CategoryConfiguration).Get(cfgBundleKey)[8:])})
		return bucket(tx, issuer.CategorySigningKeys).ForEach(func(_, v []byte) error {
			var sk storedSigningKey
			if err := json.Unmarshal(v[8:], &sk); err != nil {
				return err
			}
			oldBlobs = append(oldBlobs, pattern{"signing key sealed under the old KEK", sk.Sealed})
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	opts := Options{KEK: testKEK, Clock: &fakeClock{t: t0}}
	if _, err := RotateKEK(ctx, dir, opts, testKEK); err == nil || err.Error() != "boltstore: rotate KEK: the new KEK is the current one ("+testKEK.ID()+")" {
		t.Fatalf("rotate to the same KEK: %v", err)
	}
	if _, err := RotateKEK(ctx, dir, Options{KEK: otherKEK(t)}, otherKEK(t)); !errors.Is(err, kek.ErrWrongKEK) {
		t.Fatalf("rotate from a wrong KEK: %v", err)
	}
	partKeys, err := filepath.Glob(filepath.Join(dir, replayDirName, "*.key"))
	if err != nil || len(partKeys) != 2 {
		t.Fatalf("partition keys %v, %v", partKeys, err)
	}
	for _, f := range partKeys {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		oldBlobs = append(oldBlobs, pattern{"partition key sealed under the old KEK", b})
	}
	newKEK := otherKEK(t)
	n, err := RotateKEK(ctx, dir, opts, newKEK)
	if err != nil || n != 4 {
		t.Fatalf("RotateKEK = %d, %v; want 4 keys resealed (signing, bundle, two partitions)", n, err)
	}
	// Run again (as after a crash): nothing is left to reseal, and it still works.
	if n, err := RotateKEK(ctx, dir, opts, newKEK); err != nil || n != 0 {
		t.Fatalf("RotateKEK again = %d, %v; want 0, nil", n, err)
	}
	if _, err := Open(dir, opts); !errors.Is(err, kek.ErrWrongKEK) {
		t.Fatalf("old KEK after rotation: %v, want kek.ErrWrongKEK", err)
	}
	if got := hits(t, dir, append(oldBlobs, privatePatterns(bk, k1)...)); len(got) > 0 {
		t.Fatalf("after rotation: %v", got)
	}
	s, err = Open(dir, Options{KEK: newKEK})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys, err := s.SigningKeys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Private.Equal(k1.Private) {
		t.Fatalf("signing keys under the new KEK: %v, %v", keys, err)
	}
	if got, err := s.BundleKey(ctx); err != nil || !got.Equal(bk) {
		t.Fatalf("bundle key under the new KEK: %v", err)
	}
	// The replay records are still found: the partition keys are the same.
	wantRedeemed(t, s.Redeemed(ctx, redemption("lab", d1, "a").Replay, 0), 0)
	wantRedeemed(t, s.Redeemed(ctx, redemption("lab", d2, "b").Replay, 0), 0)
}

// TestWithdrawSigningKey: the sweep after a withdrawal compacts, so not
// even the revoked key's sealed copy is left on disk (storetest.RunState
// covers the withdrawal's behaviour: key gone at once, the withdrawal held
// until its naf).
func TestWithdrawSigningKey(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	k1, k2 := newSigningKey(t, "k1"), newSigningKey(t, "k2")
	for _, k := range []issuer.SigningKey{k1, k2} {
		if err := s.PutSigningKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	var sealed []byte
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		return bucket(tx, issuer.CategorySigningKeys).ForEach(func(_, v []byte) error {
			var sk storedSigningKey
			if err := json.Unmarshal(v[8:], &sk); err != nil {
				return err
			}
			if sk.ID == "k1" {
				sealed = sk.Sealed
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	w := issuer.WithdrawnKey{ID: "k1", At: t0, Until: k1.NotAfter}
	if err := s.WithdrawSigningKey(ctx, w); err != nil {
		t.Fatal(err)
	}
	st, err := s.Sweep(ctx, t0)
	if err != nil || !st.Compacted {
		t.Fatalf("sweep: %+v, %v; want a compaction", st, err)
	}
	if got := hits(t, dir, []pattern{{"k1 sealed", sealed}}); len(got) > 0 {
		t.Fatalf("revoked key after the sweep: %v", got)
	}
	// A store reopened after a withdrawal and a KEK rotation still works.
	s.Close()
	if _, err := RotateKEK(ctx, dir, Options{KEK: testKEK}, otherKEK(t)); err != nil {
		t.Fatal(err)
	}
}

// sealedSigningKey is the sealed blob stored for signing key id.
func sealedSigningKey(t *testing.T, s *DB, id string) []byte {
	t.Helper()
	var out []byte
	if err := s.view(context.Background(), func(tx *bolt.Tx) error {
		return bucket(tx, issuer.CategorySigningKeys).ForEach(func(_, v []byte) error {
			var sk storedSigningKey
			if err := json.Unmarshal(v[8:], &sk); err != nil {
				return err
			}
			if sk.ID == id {
				out = sk.Sealed
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no sealed signing key %s", id)
	}
	return out
}

// sealedBundleKey is the sealed blob stored for the bundle key.
func sealedBundleKey(t *testing.T, s *DB) []byte {
	t.Helper()
	var out []byte
	if err := s.view(context.Background(), func(tx *bolt.Tx) error {
		out = bytes.Clone(bucket(tx, issuer.CategoryConfiguration).Get(cfgBundleKey)[8:])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
