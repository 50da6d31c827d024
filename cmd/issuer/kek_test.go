package main

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer/boltstore"
)

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeKEK(t *testing.T, path string) *kek.Key {
	t.Helper()
	k, raw, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, kek.Encode(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// privateKeyPatterns opens the store with its KEK and returns the seeds of
// every private key in it, for a byte search of the data directory.
func privateKeyPatterns(t *testing.T, data string, k *kek.Key) []forensic.Pattern {
	t.Helper()
	db, err := boltstore.Open(data, boltstore.Options{KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	bk, err := db.BundleKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps := []forensic.Pattern{{What: "bundle key seed", Bytes: bk.Seed()}, {What: "bundle key", Bytes: bk}}
	keys, err := db.SigningKeys(ctx)
	if err != nil || len(keys) == 0 {
		t.Fatalf("signing keys: %v, %v", keys, err)
	}
	for _, sk := range keys {
		ps = append(ps, forensic.Pattern{What: "signing key " + sk.ID + " seed", Bytes: sk.Private.Seed()})
	}
	return ps
}

// issuer serve creates the KEK 0600 beside the data directory, never in
// it; a copy of the data directory holds no private key byte, and an
// issuer started on the copy without the KEK, or with another, refuses
// with a message that says so.
func TestServeSealsKeysUnderKEKOutsideData(t *testing.T) {
	t.Setenv(kekEnv, "")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Run("first start", func(t *testing.T) {
		startServe(t, serveConfig{data: data, logLevel: "info"})
	})
	kekFile := data + ".kek"
	fi, err := os.Stat(kekFile)
	if err != nil {
		t.Fatalf("no KEK beside the data directory: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %04o, want 0600", fi.Mode().Perm())
	}
	k, err := kek.Load(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range forensic.Files(t, data) {
		if strings.Contains(string(b), "hckek1:") {
			t.Fatalf("a KEK file inside the data directory: %s", path)
		}
	}

	stolen := filepath.Join(t.TempDir(), "stolen")
	copyTree(t, data, stolen)
	ps := privateKeyPatterns(t, data, k)
	if hits := forensic.Hits(t, stolen, ps); len(hits) > 0 {
		t.Fatalf("private key bytes in a copy of the data directory: %v", hits)
	}

	code, _, stderr := runIssuer(t, "serve", "--data", stolen, "--addr", "127.0.0.1:0", "--metrics-addr", "off")
	want := "issuer: the keys in " + stolen + " are sealed under a key-encryption key, and the KEK file " + stolen +
		".kek does not exist: give the file they were sealed under with --kek FILE (or $HEALTHCODE_KEK_FILE)\n"
	if code != 1 || stderr != want {
		t.Fatalf("serve on the copy without a KEK: exit %d\n%s\nwant exit 1\n%s", code, stderr, want)
	}
	if _, err := os.Stat(stolen + ".kek"); !os.IsNotExist(err) {
		t.Fatalf("a refused start left a KEK file behind: %v", err)
	}

	other := filepath.Join(root, "other.kek")
	otherKEK := writeKEK(t, other)
	code, _, stderr = runIssuer(t, "serve", "--data", stolen, "--kek", other, "--addr", "127.0.0.1:0", "--metrics-addr", "off")
	want = "issuer: " + other + " is not the key-encryption key the keys in " + stolen + " are sealed under: boltstore: cannot open the keys in " +
		stolen + ": kek: sealed under a different key-encryption key (blob sealed under KEK " + k.ID() + ", this KEK is " + otherKEK.ID() + ")\n"
	if code != 1 || stderr != want {
		t.Fatalf("serve on the copy with another KEK: exit %d\n%s\nwant\n%s", code, stderr, want)
	}

	// $HEALTHCODE_KEK_FILE names the KEK; an explicit --kek beats it.
	t.Setenv(kekEnv, other)
	code, _, stderr = runIssuer(t, "serve", "--data", stolen, "--addr", "127.0.0.1:0", "--metrics-addr", "off")
	if code != 1 || !strings.HasPrefix(stderr, "issuer: "+other+" is not the key-encryption key") {
		t.Fatalf("serve with $%s: exit %d %s", kekEnv, code, stderr)
	}
	third := filepath.Join(root, "third.kek")
	writeKEK(t, third)
	code, _, stderr = runIssuer(t, "serve", "--data", stolen, "--kek", third, "--addr", "127.0.0.1:0", "--metrics-addr", "off")
	if code != 1 || !strings.HasPrefix(stderr, "issuer: "+third+" is not the key-encryption key") {
		t.Fatalf("--kek did not beat $%s: exit %d %s", kekEnv, code, stderr)
	}
	t.Setenv(kekEnv, "")

	// The copy with its KEK is the issuer again: same fingerprint.
	fp, err := os.ReadFile(filepath.Join(data, fingerprintFile))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(stolen, fingerprintFile))
	code, out, stderr := runIssuer(t, "fingerprint", "--data", stolen, "--kek", kekFile)
	if code != 0 || out != string(fp) {
		t.Fatalf("fingerprint of the copy with its KEK: exit %d %q %s, want %q", code, out, stderr, fp)
	}
}

func TestServeRefusesKEKInsideData(t *testing.T) {
	data := t.TempDir()
	code, _, stderr := runIssuer(t, "serve", "--data", data, "--kek", filepath.Join(data, "my.kek"), "--addr", "127.0.0.1:0", "--metrics-addr", "off")
	want := "issuer: --kek " + filepath.Join(data, "my.kek") + " is inside the data directory " + data + "; keep the key-encryption key apart from the keys it seals\n"
	if code != 2 || !strings.HasPrefix(stderr, want) {
		t.Fatalf("exit %d %q, want 2 %q", code, stderr, want)
	}
	if _, err := os.Stat(filepath.Join(data, "healthcode.db")); !os.IsNotExist(err) {
		t.Fatalf("a refused start opened the store: %v", err)
	}
}

// A release-0 data directory (plain keys) is sealed at its first start
// with a KEK, keeping its fingerprint.
func TestServeUpgradesRelease0(t *testing.T) {
	t.Setenv(kekEnv, "")
	release0 := filepath.Join("..", "..", "internal", "upgradetest", "testdata", "release0")
	data := filepath.Join(t.TempDir(), "data")
	copyTree(t, filepath.Join(release0, "data"), data)
	wantFP, err := os.ReadFile(filepath.Join(release0, "fingerprint.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("first start", func(t *testing.T) {
		startServe(t, serveConfig{data: data, logLevel: "info"})
	})
	k, err := kek.Load(data + ".kek")
	if err != nil {
		t.Fatalf("no KEK made at the upgrade: %v", err)
	}
	gotFP, err := os.ReadFile(filepath.Join(data, fingerprintFile))
	if err != nil || string(gotFP) != string(wantFP) {
		t.Fatalf("fingerprint after the upgrade %q (%v), want %q", gotFP, err, wantFP)
	}
	if hits := forensic.Hits(t, data, privateKeyPatterns(t, data, k)); len(hits) > 0 {
		t.Fatalf("plain private keys remain after the upgrade: %v", hits)
	}
}

// 'issuer kek rotate' reseals the keys offline under a new KEK: the old
// one opens nothing afterwards, the new one opens the same keys.
func TestKEKRotate(t *testing.T) {
	t.Setenv(kekEnv, "")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Run("first start", func(t *testing.T) {
		startServe(t, serveConfig{data: data, logLevel: "info"})
	})
	oldFile, newFile := data+".kek", filepath.Join(root, "new.kek")
	oldKEK, err := kek.Load(oldFile)
	if err != nil {
		t.Fatal(err)
	}
	before := privateKeyPatterns(t, data, oldKEK)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kek", "rotate", "--data", data}, "issuer: kek rotate needs --new-kek FILE\n"},
		{[]string{"kek", "rotate", "--data", data, "--new-kek", oldFile}, "issuer: --new-kek must be another file than --kek (" + oldFile + ")\n"},
		{[]string{"kek", "rotate", "--data", data, "--new-kek", filepath.Join(data, "x.kek")}, "issuer: --kek " + filepath.Join(data, "x.kek") + " is inside the data directory " + data + "; keep the key-encryption key apart from the keys it seals\n"},
		{[]string{"kek", "spin"}, "issuer: unknown kek subcommand \"spin\" (want new or rotate)\n"},
	} {
		code, _, stderr := runIssuer(t, tc.args...)
		if code != 2 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%v: exit %d %q, want 2 %q", tc.args, code, stderr, tc.want)
		}
	}

	code, out, stderr := runIssuer(t, "kek", "rotate", "--data", data, "--new-kek", newFile)
	if code != 0 {
		t.Fatalf("rotate: exit %d %s", code, stderr)
	}
	newKEK, err := kek.Load(newFile)
	if err != nil {
		t.Fatalf("new KEK file: %v", err)
	}
	if want := "2 keys in " + data + " resealed under " + newFile + " (KEK id " + newKEK.ID() + ").\n"; !strings.HasPrefix(out, want) {
		t.Fatalf("rotate said %q, want it to start %q", out, want)
	}
	if _, err := boltstore.Open(data, boltstore.Options{KEK: oldKEK}); err == nil {
		t.Fatal("the old KEK still opens the store")
	}
	after := privateKeyPatterns(t, data, newKEK)
	if len(after) != len(before) {
		t.Fatalf("%d keys after rotation, %d before", len(after), len(before))
	}
	for n := range before {
		if string(before[n].Bytes) != string(after[n].Bytes) {
			t.Fatalf("%s changed in the rotation", before[n].What)
		}
	}
	if hits := forensic.Hits(t, data, after); len(hits) > 0 {
		t.Fatalf("private key bytes after rotation: %v", hits)
	}
	// One signing key and the bundle key. The issuer starts again with the new KEK, with the same fingerprint.
	fp, _ := os.ReadFile(filepath.Join(data, fingerprintFile))
	t.Run("restart", func(t *testing.T) {
		startServe(t, serveConfig{data: data, kek: newFile, logLevel: "info"})
	})
	if fp2, _ := os.ReadFile(filepath.Join(data, fingerprintFile)); string(fp2) != string(fp) {
		t.Fatalf("fingerprint %q after rotation, %q before", fp2, fp)
	}
}

// issuer kek new makes a KEK file a replica loads, 0600; it never
// overwrites one and refuses a file inside --data, leaving nothing behind.
func TestKEKNew(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "cluster.kek")
	code, out, stderr := runIssuer(t, "kek", "new", file)
	if code != 0 {
		t.Fatalf("kek new: exit %d %s", code, stderr)
	}
	k, err := kek.Load(file)
	if err != nil {
		t.Fatalf("the new file: %v", err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
	}
	if want := "New key-encryption key in " + file + " (KEK id " + k.ID() + ").\n"; !strings.HasPrefix(out, want) {
		t.Fatalf("kek new said %q, want it to start %q", out, want)
	}
	before, _ := os.ReadFile(file)

	data := filepath.Join(root, "data")
	inside := filepath.Join(data, "x.kek")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"kek", "new", file}, 1, "issuer: " + file + " already exists; a key-encryption key is never overwritten (the keys sealed under it would be lost): choose another FILE\n"},
		{[]string{"kek", "new", inside, "--data", data}, 2, "issuer: " + inside + " is inside the data directory " + data + "; keep the key-encryption key apart from the keys it seals\n"},
		{[]string{"kek", "new"}, 2, "issuer: kek new takes one FILE, got 0 arguments\n"},
	} {
		code, _, stderr := runIssuer(t, tc.args...)
		if code != tc.code || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%v: exit %d %q, want %d %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Fatal("a refused kek new changed the existing file")
	}
	if _, err := os.Stat(inside); !os.IsNotExist(err) {
		t.Fatalf("a refused kek new left %s: %v", inside, err)
	}
}

// A second issuer on a data directory in use, without the KEK file the
// first one was given, is refused for the lock and leaves no KEK file
// behind (it would be taken for the real one at the next start).
func TestServeInUseLeavesNoKEK(t *testing.T) {
	t.Setenv(kekEnv, "")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	startServe(t, serveConfig{data: data, kek: filepath.Join(root, "real.kek"), logLevel: "info"})
	code, _, stderr := runIssuer(t, "serve", "--data", data, "--addr", "127.0.0.1:0", "--metrics-addr", "off")
	if code != 1 || !strings.Contains(stderr, "is in use: another issuer holds it") {
		t.Fatalf("second issuer: exit %d %q", code, stderr)
	}
	if _, err := os.Stat(data + ".kek"); !os.IsNotExist(err) {
		t.Fatalf("the refused start left %s.kek: %v", data, err)
	}
}
