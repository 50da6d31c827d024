package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/keyfile"
)

// The cluster as a user runs it: up prints three replica URLs and writes
// the admin token and the demo attester key; an attestation signed with
// that key redeems through one replica and is refused by another; up again
// says it is running; down leaves no process; up on the kept data brings
// the same cluster back, which still refuses the attestation (Redis's AOF
// kept the record), and down --clean deletes the directory.
func TestClusterUpRedeemDown(t *testing.T) {
	devcluster, issuerBin, _ := binaries(t)
	base := filepath.Join(t.TempDir(), "cluster-data")
	all := map[int]string{} // every pid ever started, to check at the end
	t.Cleanup(func() {
		// A failed test must not leave servers bound to ports.
		if r := runCmd(t, devcluster, "down", "--dir", base); r.err != nil {
			t.Errorf("cleanup down: %v\n%s%s", r.err, r.stdout, r.stderr)
		}
		for pid, name := range all {
			if alive(pid) {
				t.Errorf("%s (pid %d) is still alive after down", name, pid)
			}
		}
	})

	r := runCmd(t, devcluster, "up", "--dir", base, "--issuer", issuerBin)
	if r.err != nil {
		t.Fatalf("up: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	urls := replicas(t, r.stdout)
	started := pids(t, base)
	if len(started) != etcdMembers+redisNodes+issuers {
		t.Fatalf("pid files for %v, want %d servers", started, etcdMembers+redisNodes+issuers)
	}
	for name, pid := range started {
		all[pid] = name
		if !alive(pid) {
			t.Fatalf("%s (pid %d) is not running after up returned", name, pid)
		}
	}

	tok, err := os.ReadFile(filepath.Join(base, adminToken))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(base, adminToken)); st.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode %v, want 0600", st.Mode().Perm())
	}
	// The token is the cluster's: every replica takes it.
	for _, u := range urls {
		req, _ := http.NewRequest("GET", u+"/v1/admin/attesters", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var list bytes.Buffer
		_, _ = list.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(list.String(), `"`+demoAttester+`"`) {
			t.Fatalf("%s admin attesters: %d %s, want 200 naming %s", u, resp.StatusCode, list.String(), demoAttester)
		}
	}

	key, err := keyfile.Read(filepath.Join(base, demoKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	att, err := attestation.Sign(key, attestation.Claims{Attester: demoAttester, Kind: attestation.TestNegative,
		At: now.Add(-time.Hour).Unix(), Expires: now.Add(48 * time.Hour).Unix(), ID: "devcluster-test-1"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := redeem(t, urls[0], att); code != 200 {
		t.Fatalf("redeem through %s: %d %s", urls[0], code, body)
	}
	if code, body := redeem(t, urls[1], att); code != 409 || !strings.Contains(body, "already_redeemed") {
		t.Fatalf("the same attestation through %s: %d %s, want 409 already_redeemed", urls[1], code, body)
	}

	r = runCmd(t, devcluster, "up", "--dir", base, "--issuer", issuerBin)
	if r.err != nil || !strings.Contains(r.stdout, "already running") {
		t.Fatalf("second up: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if again := replicas(t, r.stdout); strings.Join(again, " ") != strings.Join(urls, " ") {
		t.Fatalf("second up printed %v, want %v", again, urls)
	}

	r = runCmd(t, devcluster, "down", "--dir", base)
	if r.err != nil {
		t.Fatalf("down: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	for name, pid := range started {
		if alive(pid) {
			t.Errorf("%s (pid %d) is alive after down", name, pid)
		}
	}
	if !strings.Contains(r.stdout, "none of the cluster's 12 servers is running") || !strings.Contains(r.stdout, "CLEAN=1") {
		t.Errorf("down said:\n%s", r.stdout)
	}

	r = runCmd(t, devcluster, "up", "--dir", base, "--issuer", issuerBin)
	if r.err != nil {
		t.Fatalf("up on the kept data: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if again := replicas(t, r.stdout); strings.Join(again, " ") != strings.Join(urls, " ") {
		t.Fatalf("up on the kept data printed %v, want the same ports %v", again, urls)
	}
	for name, pid := range pids(t, base) {
		all[pid] = name
	}
	if code, body := redeem(t, urls[2], att); code != 409 {
		t.Fatalf("after a restart, the redeemed attestation through %s: %d %s, want 409", urls[2], code, body)
	}

	r = runCmd(t, devcluster, "down", "--dir", base, "--clean")
	if r.err != nil {
		t.Fatalf("down --clean: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if _, err := os.Stat(base); !os.IsNotExist(err) {
		t.Fatalf("down --clean left %s: %v", base, err)
	}
	for pid, name := range all {
		if alive(pid) {
			t.Errorf("%s (pid %d) is alive after down --clean", name, pid)
		}
	}
}
