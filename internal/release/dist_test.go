package release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// dist is the directory `make dist` wrote: $HEALTHCODE_DIST (CI builds it
// once), else a build of the linux/amd64 binaries made here.
func dist(t *testing.T) string {
	if d := os.Getenv("HEALTHCODE_DIST"); d != "" {
		abs, err := filepath.Abs(filepath.Join("..", "..", d))
		if filepath.IsAbs(d) {
			abs = d
		}
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	d := t.TempDir()
	cmd := exec.Command("make", "dist", "DIST_PLATFORMS=linux/amd64", "DIST="+d)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make dist: %v\n%s", err, out)
	}
	return d
}

func TestDist(t *testing.T) {
	d := dist(t)
	sums := checkSums(t, d)
	for _, prog := range []string{"issuer", "verifier", "attester"} {
		name := prog + "-linux-amd64"
		if !sums[name] {
			t.Fatalf("SHA256SUMS does not list %s", name)
		}
		checkStatic(t, filepath.Join(d, name))
		checkVersion(t, filepath.Join(d, name), prog)
	}
	// The other platforms, when this dist has them, are the right formats.
	magic := map[string][]byte{"linux-arm64": {0x7f, 'E', 'L', 'F'}, "darwin-arm64": {0xcf, 0xfa, 0xed, 0xfe}, "windows-amd64.exe": {'M', 'Z'}}
	for name := range sums {
		for suffix, m := range magic {
			if strings.HasSuffix(name, suffix) {
				b := make([]byte, len(m))
				f, err := os.Open(filepath.Join(d, name))
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.ReadFull(f, b)
				f.Close()
				if err != nil || !bytes.Equal(b, m) {
					t.Fatalf("%s starts with %x, want %x", name, b, m)
				}
			}
		}
	}
	walkthrough(t, d)
}

// checkSums verifies every line of SHA256SUMS against its file and that
// every file is listed.
func checkSums(t *testing.T, d string) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Fatalf("%s: SHA256SUMS says %s, the file is %x", name, sum, got)
		}
		listed[name] = true
	}
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" && !listed[e.Name()] {
			t.Fatalf("%s is not in SHA256SUMS", e.Name())
		}
	}
	return listed
}

// checkStatic: an x86-64 ELF with no program interpreter, so it runs on a
// machine without a C library (CGO_ENABLED=0).
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		t.Fatalf("%s: machine %v", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked (has an interpreter)", path)
		}
	}
}

// checkVersion: PROG --version names the program, the module version and
// the revision of this checkout (a git worktree, whose .git is a file, is
// not stamped by the go command: then "unknown").
func checkVersion(t *testing.T, path, prog string) {
	t.Helper()
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", path, err)
	}
	m := regexp.MustCompile(`^` + prog + ` (\S+) revision (\S+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("%s --version: %q", prog, out)
	}
	want := "unknown"
	if fi, err := os.Stat(filepath.Join("..", "..", ".git")); err == nil && fi.IsDir() {
		rev, err := exec.Command("git", "-C", filepath.Join("..", ".."), "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatal(err)
		}
		want = strings.TrimSpace(string(rev))
		if m[1] == "(devel)" {
			t.Fatalf("%s --version: %q: no module version from the VCS stamp", prog, out)
		}
	}
	if m[2] != want {
		t.Fatalf("%s --version: %q, want revision %s", prog, out, want)
	}
}

// walkthrough runs the README's path with the release binaries: serve with
// a demo attester, sync a verifier by pin, sign, redeem, check, and a token
// with one character of its signature changed is refused.
func walkthrough(t *testing.T, d string) {
	bin := func(p string) string { return filepath.Join(d, p+"-linux-amd64") }
	work := t.TempDir()
	data := filepath.Join(work, "data")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Free ports for both listeners: the metrics default (127.0.0.1:9090)
	// may be taken on a shared machine.
	srv := exec.CommandContext(ctx, bin("issuer"), "serve", "--data", data, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--demo")
	srv.Cancel = func() error { return srv.Process.Signal(syscall.SIGTERM) }
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var srvErr lockedBuffer
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	var base, pin string
	for sc.Scan() && (base == "" || pin == "") {
		line := sc.Text()
		if b, ok := strings.CutPrefix(line, "Healthcode issuer on "); ok {
			base = b
		}
		if _, p, ok := strings.Cut(line, "(verifiers pin this): "); ok {
			pin = p
		}
	}
	go io.Copy(io.Discard, stdout)
	if base == "" || pin == "" {
		t.Fatalf("no address or pin in the welcome (base %q, pin %q); stderr:\n%s", base, pin, srvErr.String())
	}

	run := func(wantCode int, prog string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin(prog), args...)
		cmd.Dir = work
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("%s %q: exit %d, want %d\n%s%s", prog, args, code, wantCode, out.String(), errb.String())
		}
		return out.String()
	}
	run(0, "verifier", "sync", base, "--pin", pin, "--bundle", "bundle.json")
	att := strings.TrimSpace(run(0, "attester", "sign", "--key", filepath.Join(data, "demo-attester.key"), "--id", "demo-lab", "--kind", "test-negative"))
	body, _ := json.Marshal(map[string][]string{"attestations": {att}})
	resp, err := http.Post(base+"/v1/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var batch struct {
		Colour string
		Tokens []struct{ Token string }
	}
	err = json.NewDecoder(resp.Body).Decode(&batch)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || batch.Colour != "green" || len(batch.Tokens) == 0 {
		t.Fatalf("redeem: %d %v %+v", resp.StatusCode, err, batch)
	}
	tok := batch.Tokens[0].Token
	if out := run(0, "verifier", "check", "--bundle", "bundle.json", tok); !strings.Contains(out, "GREEN") {
		t.Fatalf("check: %q", out)
	}
	// Change one character in the middle of the signature.
	sig := strings.LastIndexByte(tok, '.') + 1
	mid := sig + (len(tok)-sig)/2
	c := byte('A')
	if tok[mid] == 'A' {
		c = 'B'
	}
	tampered := tok[:mid] + string(c) + tok[mid+1:]
	run(1, "verifier", "check", "--bundle", "bundle.json", tampered)
}

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
