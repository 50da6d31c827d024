package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"image"
	_ "image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/qr"
)

// keys is the attestation.Keys a test issuer would hold.
type keys map[string]ed25519.PublicKey

func (k keys) AttesterKey(id string) (ed25519.PublicKey, bool) {
	p, ok := k[id]
	return p, ok
}

const nowText = "2026-03-01T12:00:00Z"

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func call(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// newLab runs keygen and returns the key path and the printed public key.
func newLab(t *testing.T) (path string, pub ed25519.PublicKey) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "lab.key")
	code, out, errs := call(t, "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errs)
	}
	pub, err := keyfile.ParsePublic(strings.TrimSuffix(out, "\n"))
	if err != nil {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	return path, pub
}

func TestKeygenWrites0600AndRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lab.key")
	code, out, errs := call(t, "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	enc := strings.TrimSuffix(out, "\n")
	if out != enc+"\n" || len(enc) != 43 {
		t.Fatalf("stdout %q is not one base64url public key line", out)
	}
	key, err := keyfile.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := keyfile.EncodePublic(key.Public().(ed25519.PublicKey)); got != enc {
		t.Fatalf("printed public key %s does not belong to the written private key (%s)", enc, got)
	}
	wantHint := "attester keygen: wrote private key to " + path + " (mode 0600); register it with: issuer admin attesters add --id ATTESTER_ID --key " + enc + "\n"
	if errs != wantHint {
		t.Fatalf("stderr = %q\nwant %q", errs, wantHint)
	}
	before, _ := os.ReadFile(path)

	code, out, errs = call(t, "keygen", "--out", path)
	wantErr := "attester keygen: --out " + path + " already exists; refusing to overwrite it (pass --force to replace it; the old key is then lost)\n"
	if code != 1 || out != "" || errs != wantErr {
		t.Fatalf("second keygen: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("refused keygen changed the key file")
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = call(t, "keygen", "--out", path, "--force")
	if code != 0 {
		t.Fatalf("keygen --force: exit %d: %s", code, errs)
	}
	if strings.TrimSuffix(out, "\n") == enc {
		t.Fatal("keygen --force printed the old public key")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("after --force mode %04o, want 0600", fi.Mode().Perm())
	}
}

func TestPubkeyPrintsKeygenKey(t *testing.T) {
	path, pub := newLab(t)
	code, out, errs := call(t, "pubkey", "--key", path)
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if out != keyfile.EncodePublic(pub)+"\n" {
		t.Fatalf("pubkey printed %q, keygen %q", out, keyfile.EncodePublic(pub))
	}
	code, _, errs = call(t, "pubkey")
	if code != 2 || errs != "attester pubkey: --key is required (the private key file made by 'attester keygen')\nrun 'attester pubkey --help' for usage\n" {
		t.Fatalf("pubkey without --key: exit %d, stderr %q", code, errs)
	}
}

func TestSignVerifiesWithGivenClaims(t *testing.T) {
	path, pub := newLab(t)
	code, out, errs := call(t, "sign", "--key", path, "--id", "city-lab-1", "--kind", "vaccination",
		"--at", "2026-02-20T14:00:00+01:00", "--ttl", "168h", "--hint", "AB1980", "--jti", "abc-123", "--now", nowText)
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	raw := strings.TrimSuffix(out, "\n")
	ev, err := attestation.Verify(raw, keys{"city-lab-1": pub}, attestation.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	want := attestation.Evidence{
		Attester: "city-lab-1",
		Kind:     attestation.Vaccination,
		At:       time.Date(2026, 2, 20, 13, 0, 0, 0, time.UTC),
		Expires:  now.Add(168 * time.Hour), // from signing time, not from --at
		ID:       "abc-123",
		Hint:     "AB1980",
	}
	if !ev.At.Equal(want.At) || !ev.Expires.Equal(want.Expires) {
		t.Fatalf("at %v exp %v, want at %v exp %v", ev.At, ev.Expires, want.At, want.Expires)
	}
	ev.At, ev.Expires, want.At, want.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if ev != want {
		t.Fatalf("evidence %+v\nwant %+v", ev, want)
	}

	// The signature really binds the key: another attester's key refuses it.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	_, err = attestation.Verify(raw, keys{"city-lab-1": other.Public().(ed25519.PublicKey)}, attestation.Options{Now: now})
	var aerr *attestation.Error
	if !errors.As(err, &aerr) || aerr.Code != attestation.CodeBadSignature {
		t.Fatalf("verify under another key: %v", err)
	}
}

func TestSignDefaults(t *testing.T) {
	path, pub := newLab(t)
	sign := func() (string, attestation.Evidence) {
		code, out, errs := call(t, "sign", "--key", path, "--id", "lab", "--kind", "test-negative", "--now", nowText)
		if code != 0 || errs != "" {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
		raw := strings.TrimSuffix(out, "\n")
		ev, err := attestation.Verify(raw, keys{"lab": pub}, attestation.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return raw, ev
	}
	raw, ev := sign()
	if !ev.At.Equal(now) || !ev.Expires.Equal(now.Add(72*time.Hour)) || ev.Kind != attestation.TestNegative || ev.Hint != "" {
		t.Fatalf("defaults: %+v", ev)
	}
	id, err := base64.RawURLEncoding.DecodeString(ev.ID)
	if err != nil || len(id) != 16 {
		t.Fatalf("default jti %q is not 128 bits of base64url (%v)", ev.ID, err)
	}
	// Without --hint the claim is absent, not empty.
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims["hint"]; ok || len(claims) != 5 {
		t.Fatalf("claims %v: want iss, kind, at, exp, jti only", claims)
	}
	if _, ev2 := sign(); ev2.ID == ev.ID {
		t.Fatal("two attestations got the same random jti")
	}
}

func TestSignQRDecodesToSameString(t *testing.T) {
	path, _ := newLab(t)
	png := filepath.Join(t.TempDir(), "resident.png")
	code, out, errs := call(t, "sign", "--key", path, "--id", "lab", "--kind", "recovery", "--qr", png, "--now", nowText, "--at", "2026-02-01T00:00:00Z")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	f, err := os.Open(png)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := qr.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimSuffix(out, "\n") {
		t.Fatalf("QR holds %q\nstdout   %q", got, out)
	}
	f.Seek(0, 0)
	cfg, _, err := image.DecodeConfig(f)
	if err != nil || cfg.Width != 512 || cfg.Height != 512 {
		t.Fatalf("QR image %dx%d (%v), want 512x512", cfg.Width, cfg.Height, err)
	}
	if fi, _ := os.Stat(png); fi.Mode().Perm() != 0o600 {
		t.Fatalf("QR file mode %04o, want 0600", fi.Mode().Perm())
	}
}

func TestSignUsageErrors(t *testing.T) {
	path, _ := newLab(t)
	base := []string{"sign", "--key", path, "--id", "lab", "--kind", "test-negative", "--now", nowText}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	kinds := attestation.KindNames()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"sign", "--id", "lab", "--kind", "test-negative"}, "--key is required (the private key file made by 'attester keygen')"},
		{[]string{"sign", "--key", path, "--kind", "test-negative"}, "--id is required (the attester id the issuer registered this key under)"},
		{[]string{"sign", "--key", path, "--id", "lab"}, "--kind is required; one of: " + kinds},
		{[]string{"sign", "--key", path, "--id", "lab", "--kind", "negative"}, `--kind "negative" is not one of: ` + kinds},
		{[]string{"sign", "--key", path, "--id", strings.Repeat("x", 65), "--kind", "recovery"}, "--id is longer than 64 bytes"},
		{[]string{"sign", "--key", path, "--id", "city lab", "--kind", "recovery"}, "--id may hold only printable ASCII characters without spaces"},
		{with("--now", "yesterday"), `--now "yesterday" is not an RFC 3339 time (e.g. 2026-03-01T09:30:00Z)`},
		{with("--at", "2026-03-01"), `--at "2026-03-01" is not an RFC 3339 time (e.g. 2026-03-01T09:30:00Z)`},
		{with("--at", "2026-03-01T12:00:01Z"), "--at 2026-03-01T12:00:01Z is in the future (now is 2026-03-01T12:00:00Z)"},
		{with("--at", "1970-01-01T00:00:00Z"), "--at 1970-01-01T00:00:00Z is not after 1970-01-01T00:00:00Z"},
		{with("--ttl", "3d"), `--ttl "3d" is not a duration (e.g. 72h, 90m)`},
		{with("--ttl", "0s"), "--ttl must be at least 1s, got 0s"},
		{with("--ttl", "-1h"), "--ttl must be at least 1s, got -1h0m0s"},
		{with("--ttl", "500ms"), "--ttl must be at least 1s, got 500ms"},
		{with("--hint", "ABCDEFGHIJKLMNOPQ"), "--hint is 17 bytes; at most 16 are allowed"},
		{with("--hint", ""), "--hint is empty; omit it for no hint"},
		{with("--hint", "AB\n1980"), "--hint contains a control character"},
		{with("--hint", "AB\xff"), "--hint is not valid UTF-8"},
		{with("--jti", ""), "--jti is empty; omit it for a random id"},
		{with("--jti", strings.Repeat("j", 65)), "--jti is longer than 64 bytes"},
		{with("--jti", "a b"), "--jti may hold only printable ASCII characters without spaces"},
		{with("--qr", ""), "--qr is empty; give the PNG file to write"},
		{with("--colour", "green"), "unknown flag --colour"},
		{with("extra"), `unexpected argument "extra" (flags take the form --name value)`},
	}
	for _, c := range cases {
		code, out, errs := call(t, c.args...)
		want := "attester sign: " + c.want + "\nrun 'attester sign --help' for usage\n"
		if code != 2 || out != "" || errs != want {
			t.Errorf("%q: exit %d, stdout %q\nstderr %q\nwant   %q", c.args[1:], code, out, errs, want)
		}
	}
}

func TestSignKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "notpem.key")
	os.WriteFile(notPEM, []byte("not a key\n"), 0o600)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPath := filepath.Join(dir, "ec.key")
	os.WriteFile(ecPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	missing := filepath.Join(dir, "missing.key")

	cases := map[string]string{
		missing: "--key: cannot read key file: open " + missing + ": no such file or directory",
		notPEM:  "--key: key file " + notPEM + ` is not PEM (want a "-----BEGIN PRIVATE KEY-----" block)`,
		ecPath:  "--key: key file " + ecPath + " holds an ECDSA key; want Ed25519",
	}
	for path, msg := range cases {
		code, out, errs := call(t, "sign", "--key", path, "--id", "lab", "--kind", "recovery", "--now", nowText)
		if want := "attester sign: " + msg + "\n"; code != 1 || out != "" || errs != want {
			t.Errorf("exit %d, stdout %q\nstderr %q\nwant   %q", code, out, errs, want)
		}
	}
}

func TestSignWarnsOnLooseKeyButSigns(t *testing.T) {
	path, pub := newLab(t)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := call(t, "sign", "--key", path, "--id", "lab", "--kind", "recovery", "--now", nowText)
	want := "attester sign: warning: key file " + path + " has mode 0644; it should be 0600 (run: chmod 600 " + path + ")\n"
	if code != 0 || errs != want {
		t.Fatalf("exit %d, stderr %q\nwant %q", code, errs, want)
	}
	if _, err := attestation.Verify(strings.TrimSuffix(out, "\n"), keys{"lab": pub}, attestation.Options{Now: now}); err != nil {
		t.Fatal(err)
	}
}

func TestHelp(t *testing.T) {
	code, out, errs := call(t)
	if code != 2 || out != "" || errs != mainUsage {
		t.Fatalf("no arguments: exit %d, stdout %q", code, out)
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, errs := call(t, args...)
		if code != 0 || out != mainUsage || errs != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errs)
		}
	}
	if !strings.Contains(mainUsage, "Examples:") || strings.Contains(mainUsage, "--now") {
		t.Error("main usage must show examples and hide the test-only --now")
	}
	for name, usage := range map[string]string{"keygen": keygenUsage, "pubkey": pubkeyUsage, "sign": signUsage} {
		for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
			code, out, errs := call(t, args...)
			if code != 0 || out != usage || errs != "" {
				t.Errorf("%q: exit %d, stderr %q", args, code, errs)
			}
		}
		if !strings.Contains(usage, "Example") {
			t.Errorf("%s usage has no example", name)
		}
	}
	if !strings.Contains(signUsage, "--now TIME        for tests only") {
		t.Error("sign usage must mark --now as test-only")
	}

	code, out, errs = call(t, "frobnicate")
	if code != 2 || out != "" || errs != "attester: unknown command \"frobnicate\"\nrun 'attester help' for the commands\n" {
		t.Errorf("unknown command: exit %d, stderr %q", code, errs)
	}
	code, _, errs = call(t, "help", "frobnicate")
	if code != 2 || errs != "attester help: unknown command \"frobnicate\"\nrun 'attester help' for the commands\n" {
		t.Errorf("help unknown: exit %d, stderr %q", code, errs)
	}
	code, _, errs = call(t, "keygen")
	if code != 2 || errs != "attester keygen: --out is required (where to write the private key)\nrun 'attester keygen --help' for usage\n" {
		t.Errorf("keygen without --out: exit %d, stderr %q", code, errs)
	}
}

func TestVersionFlag(t *testing.T) {
	code, out, errs := call(t, "--version")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "attester ") || !strings.Contains(out, " revision ") {
		t.Fatalf("--version: exit %d, %q %q", code, out, errs)
	}
}
