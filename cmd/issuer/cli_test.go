package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/qr"
)

// welcome collects serve's welcome text and says when it is complete.
type welcome struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
	once sync.Once
}

func (w *welcome) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "  wallet: ") {
		w.once.Do(func() { close(w.done) })
	}
	return len(p), nil
}

// serveWelcome starts serve on dir, returns its welcome text and stops it.
func serveWelcome(t *testing.T, dir string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &welcome{done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		errc <- serve(ctx, serveConfig{data: dir, addr: "127.0.0.1:0", logLevel: "info"}, slog.New(slog.DiscardHandler), w)
	}()
	select {
	case <-w.done:
	case err := <-errc:
		cancel()
		t.Fatalf("serve returned before its welcome: %v", err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("serve: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// Start-up says whether it made the admin token or reuses the one on disk,
// and a restart leaves the file as it was.
func TestStartupSaysCreatedOrReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, adminTokenFile)
	first := serveWelcome(t, dir)
	if want := "  admin token created and written to " + path + " (shown nowhere else)\n"; !strings.Contains(first, want) {
		t.Fatalf("first start:\n%s\nwant the line %q", first, want)
	}
	tok, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	second := serveWelcome(t, dir)
	if want := "  admin token: reusing the one in " + path + " (made at an earlier start)\n"; !strings.Contains(second, want) || strings.Contains(second, "written to") {
		t.Fatalf("restart:\n%s\nwant the line %q and no 'written to'", second, want)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, tok) {
		t.Fatal("a restart changed the admin token file")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	third := serveWelcome(t, dir)
	if want := "  admin token: none on disk; the tokens made before still work ('issuer admin tokens list')\n"; !strings.Contains(third, want) {
		t.Fatalf("restart without the file:\n%s\nwant the line %q", third, want)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a restart wrote a new admin token file although tokens exist")
	}
}

// An explicit --token-file beats both variables; HEALTHCODE_ADMIN_TOKEN_FILE
// names a file; HEALTHCODE_ADMIN_TOKEN holding a path is refused clearly.
func TestAdminTokenFlagBeatsEnvironment(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	dir := t.TempDir()
	good := filepath.Join(dir, "good.token")
	bad := filepath.Join(dir, "bad.token")
	if err := os.WriteFile(good, []byte(env.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("hcadm_wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HEALTHCODE_URL", env.URL)
	const refused = "issuer: the admin token is not valid (unauthorized, HTTP 401)\n"
	for _, c := range []struct {
		name               string
		tokenEnv, fileEnv  string
		args               []string
		code               int
		stdout, stderrPart string
	}{
		{"flag beats a wrong token in the environment", "hcadm_wrong", "", []string{"--token-file", good}, 0, "", ""},
		{"flag after the command too", "hcadm_wrong", "", []string{"tokens", "list", "--token-file", good}, 0, "", ""},
		{"flag beats the file variable", "", bad, []string{"--token-file", good}, 0, "", ""},
		{"file variable", "", good, nil, 0, "", ""},
		{"file variable, wrong token", "", bad, nil, 1, "", refused},
		{"token variable", env.AdminToken, "", nil, 0, "", ""},
		{"token variable holding a path", good, "", nil, 2, "", "issuer: HEALTHCODE_ADMIN_TOKEN holds a path, not a token; for a file use HEALTHCODE_ADMIN_TOKEN_FILE or --token-file\n"},
		{"both variables", env.AdminToken, good, nil, 2, "", "issuer: HEALTHCODE_ADMIN_TOKEN and HEALTHCODE_ADMIN_TOKEN_FILE are both set; set one (or pass --token-file)\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("HEALTHCODE_ADMIN_TOKEN", c.tokenEnv)
			t.Setenv("HEALTHCODE_ADMIN_TOKEN_FILE", c.fileEnv)
			args := append([]string{"admin"}, c.args...)
			if len(c.args) == 0 || c.args[0] != "tokens" {
				args = append(args, "tokens", "list")
			}
			code, out, errOut := runIssuer(t, args...)
			if code != c.code || (c.stderrPart != "" && !strings.HasPrefix(errOut, c.stderrPart)) || (c.code == 0 && !strings.Contains(out, env.AdminName)) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d and stderr %q", code, out, errOut, c.code, c.stderrPart)
			}
		})
	}
}

// The poster QR's text is exactly the fingerprint (contract 5).
func TestFingerprintPosterQR(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	// As serve does, for a running issuer holds the database lock.
	if err := os.WriteFile(filepath.Join(env.Dir, fingerprintFile), []byte(env.Pin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(t.TempDir(), "pin.png")
	code, out, errOut := runIssuer(t, "fingerprint", "--data", env.Dir, "--qr", png)
	if code != 0 || out != env.Pin+"\n" || errOut != "issuer fingerprint: wrote the pin's QR code to "+png+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	f, err := os.Open(png)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	text, err := qr.Decode(f)
	if err != nil || text != env.Pin {
		t.Fatalf("the QR reads %q (%v), want %q", text, err, env.Pin)
	}
	if code, _, errOut := runIssuer(t, "fingerprint", "--data", env.Dir, "--qr", filepath.Join(t.TempDir(), "no", "such", "dir.png")); code != 1 || !strings.HasPrefix(errOut, "issuer: --qr: ") {
		t.Fatalf("unwritable --qr: exit %d, %q", code, errOut)
	}
}
