package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// commandTimeout bounds each run of the command: a healthy up takes a few
// seconds, but the machine is shared.
const commandTimeout = 4 * time.Minute

// The programs the tests run, built once into binDir (as make cluster
// builds them into bin/).
var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries returns the path of each program in binDir.
func binaries(t *testing.T) (devcluster, issuerBin, verifierBin string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "devcluster-test-"); buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + "/"}
		for _, p := range []string{"devcluster", "issuer", "verifier"} {
			args = append(args, "github.com/healthcode/healthcode/cmd/"+p)
		}
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "devcluster"), filepath.Join(binDir, "issuer"), filepath.Join(binDir, "verifier")
}

type result struct {
	stdout, stderr string
	err            error
}

func runCmd(t *testing.T, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

var replicaLine = regexp.MustCompile(`^replica: (http://127\.0\.0\.1:[0-9]+)$`)

// replicas are the URLs of the "replica: URL" lines; every line starting
// with "replica:" must have exactly that form.
func replicas(t *testing.T, stdout string) []string {
	t.Helper()
	var urls []string
	for _, line := range strings.Split(stdout, "\n") {
		if !strings.HasPrefix(line, "replica:") {
			continue
		}
		m := replicaLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("replica line %q is not 'replica: http://127.0.0.1:PORT'", line)
		}
		urls = append(urls, m[1])
	}
	if len(urls) != issuers {
		t.Fatalf("%d replica lines, want %d:\n%s", len(urls), issuers, stdout)
	}
	return urls
}

// pids reads every server's pid file.
func pids(t *testing.T, base string) map[string]int {
	t.Helper()
	out := map[string]int{}
	entries, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(base, e.Name(), pidFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s/%s: %v", e.Name(), pidFile, err)
		}
		out[e.Name()] = pid
	}
	return out
}

func redeem(t *testing.T, url, att string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string][]string{"attestations": {att}})
	resp, err := http.Post(url+"/v1/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

// A part that fails half way is named with its log, and everything the run
// had started is stopped.
func TestClusterUpFailureStopsWhatItStarted(t *testing.T) {
	devcluster, _, _ := binaries(t)
	base := filepath.Join(t.TempDir(), "cluster-data")
	// An "issuer" that prints a line and exits: etcd and Redis come up,
	// the first replica does not.
	fake := filepath.Join(t.TempDir(), "issuer")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'fake issuer: no such flag' >&2\nexit 3\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runCmd(t, devcluster, "down", "--dir", base) })
	r := runCmd(t, devcluster, "up", "--dir", base, "--issuer", fake)
	if r.err == nil {
		t.Fatalf("up with a failing issuer succeeded:\n%s", r.stdout)
	}
	for _, want := range []string{"issuer-0 exited", "fake issuer: no such flag", "stopped what this run had started"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "replica:") {
		t.Errorf("a failed up printed replica lines:\n%s", r.stdout)
	}
	for name, pid := range pids(t, base) {
		t.Errorf("%s left a pid file (pid %d, alive %v)", name, pid, alive(pid))
	}
	// Nothing is left running in the cluster's directories.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && strings.HasPrefix(cwd, base) {
			t.Errorf("pid %d is still running in %s", pid, cwd)
		}
	}
}

// A cluster started again reuses its recorded ports (Redis's nodes.conf
// and etcd's member list hold them): one taken by another program is
// named, with who needs it, before anything starts.
func TestClusterUpNamesATakenPort(t *testing.T) {
	devcluster, _, _ := binaries(t)
	base := filepath.Join(t.TempDir(), "cluster-data")
	if err := os.MkdirAll(base, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := newLayout()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.save(base); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", addr(l.Redis[4].Bus))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	t.Cleanup(func() { runCmd(t, devcluster, "down", "--dir", base) })
	r := runCmd(t, devcluster, "up", "--dir", base, "--issuer", "/bin/true")
	want := fmt.Sprintf("port %d (redis-4 cluster bus) is taken", l.Redis[4].Bus)
	if r.err == nil || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "CLEAN=1") {
		t.Fatalf("up with a recorded port taken: %v\n%s; want %q", r.err, r.stderr, want)
	}
	if got := pids(t, base); len(got) != 0 {
		t.Fatalf("up started %v although a port was taken", got)
	}
}
