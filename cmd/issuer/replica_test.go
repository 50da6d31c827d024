package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/policy"
)

// replicaCluster is a real etcd and Redis Cluster (testcluster) with
// `issuer serve --etcd --redis` replicas, each with its own data directory
// and log: run in this process through the command line (run), or, with
// Binary set (startReplicaProcesses), as processes of the built command,
// which Kill can SIGKILL. Fault tests build on it (Stop, Kill, Start
// again).
type replicaCluster struct {
	t       *testing.T
	Etcd    *testcluster.EtcdCluster
	Redis   *testcluster.RedisCluster
	Dir     string
	KEKFile string
	// DemoKey is the demo-lab attester's key, written into every
	// replica's data directory before it starts (--demo then registers
	// the same key on each).
	DemoKey ed25519.PrivateKey
	Args    []string // added to every replica's command line
	// Binary, if set, is the issuer command replicas run as processes.
	Binary   string
	Replicas []*replicaRun
}

// replicaRun is one replica.
type replicaRun struct {
	Name, Dir string
	URL       string // set once it listens
	Log       *logBuffer
	stop      func() // SIGTERM, or its in-process equivalent; nil when not running
	proc      *os.Process
	done      chan int
}

// logBuffer is a replica's stderr (its JSON log), safe to read while it
// runs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count is how many log lines have msg as their message.
func (l *logBuffer) Count(msg string) int {
	return strings.Count(l.String(), `"msg":"`+msg+`"`)
}

// startReplicaCluster starts etcd, Redis and n replicas: the first alone
// (it makes the admin token in its data directory), then the rest at
// once. args are added to every replica's command line.
func startReplicaCluster(t *testing.T, n int, args ...string) *replicaCluster {
	t.Helper()
	return startReplicas(t, "", n, args...)
}

// startReplicaProcesses is startReplicaCluster with each replica a
// process of the issuer command, built for the test.
func startReplicaProcesses(t *testing.T, n int, args ...string) *replicaCluster {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "issuer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return startReplicas(t, bin, n, args...)
}

func startReplicas(t *testing.T, bin string, n int, args ...string) *replicaCluster {
	t.Helper()
	c := &replicaCluster{t: t, Dir: t.TempDir(), Args: args, Binary: bin}
	c.Etcd = testcluster.StartEtcd(t)
	c.Redis = testcluster.StartRedis(t)
	c.KEKFile = filepath.Join(c.Dir, "kek")
	if _, _, err := kek.LoadOrCreate(c.KEKFile); err != nil {
		t.Fatal(err)
	}
	_, c.DemoKey, _ = ed25519.GenerateKey(rand.Reader)
	for i := range n {
		name := fmt.Sprintf("replica-%d", i)
		c.Replicas = append(c.Replicas, &replicaRun{Name: name, Dir: filepath.Join(c.Dir, name)})
	}
	if n > 0 {
		c.Start(0)
	}
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Start(i)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return c
}

// AdminTokenFile is the admin token the first replica made.
func (c *replicaCluster) AdminTokenFile() string {
	return filepath.Join(c.Replicas[0].Dir, adminTokenFile)
}

// Start (re)starts replica i and waits until it listens. Safe to call
// from several goroutines for different replicas; it reports failures
// with t.Error.
func (c *replicaCluster) Start(i int) {
	r := c.Replicas[i]
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		c.t.Error(err)
		return
	}
	if err := keyfile.Write(filepath.Join(r.Dir, demoAttesterFile), c.DemoKey, true); err != nil {
		c.t.Error(err)
		return
	}
	args := append([]string{"serve",
		"--etcd", strings.Join(c.Etcd.Endpoints(), ","),
		"--redis", strings.Join(c.Redis.Addrs(), ","),
		"--kek", c.KEKFile,
		"--data", r.Dir,
		"--addr", "127.0.0.1:0",
		"--metrics-addr", "off",
		"--replica-id", r.Name,
		"--demo",
		// Tests poll and load from one client address.
		"--redeem-rate", "0", "--inventory-rate", "0", "--admin-rate", "0",
	}, c.Args...)
	out := &firstLine{ch: make(chan string, 1)}
	r.Log, r.done, r.proc = &logBuffer{}, make(chan int, 1), nil
	if c.Binary == "" {
		ctx, cancel := context.WithCancel(context.Background())
		r.stop = cancel
		go func() { r.done <- run(ctx, args, strings.NewReader(""), out, r.Log) }()
	} else {
		cmd := exec.Command(c.Binary, args...)
		cmd.Stdout, cmd.Stderr = out, r.Log
		if err := cmd.Start(); err != nil {
			c.t.Error(err)
			return
		}
		r.proc = cmd.Process
		r.stop = func() { cmd.Process.Signal(syscall.SIGTERM) }
		go func() {
			cmd.Wait()
			r.done <- cmd.ProcessState.ExitCode()
		}()
	}
	c.t.Cleanup(func() { r.Stop() })
	select {
	case chunk := <-out.ch:
		line, _, _ := strings.Cut(chunk, "\n")
		base, ok := strings.CutPrefix(line, "Healthcode issuer on ")
		if !ok {
			c.t.Errorf("%s: first line %q", r.Name, line)
			return
		}
		r.URL = base
	case code := <-r.done:
		r.done <- code
		c.t.Errorf("%s exited (%d) before listening:\n%s", r.Name, code, r.Log)
	case <-time.After(testcluster.ReadyTimeout): // a failure bound: a start stuck on etcd or Redis fails, not hangs
		c.t.Errorf("%s not listening after %s:\n%s", r.Name, testcluster.ReadyTimeout, r.Log)
	}
}

// Stop ends the replica as SIGTERM does and returns its exit status (-1
// if it was not running).
func (r *replicaRun) Stop() int {
	if r.stop == nil {
		return -1
	}
	r.stop()
	return r.wait()
}

// Kill SIGKILLs a replica process (Binary set) and returns its exit
// status.
func (r *replicaRun) Kill() int {
	if r.stop == nil || r.proc == nil {
		return -1
	}
	r.proc.Kill()
	return r.wait()
}

func (r *replicaRun) wait() int {
	r.stop = nil
	select {
	case code := <-r.done:
		return code
	case <-time.After(60 * time.Second): // a failure bound
		panic(r.Name + " did not stop within 60s")
	}
}

// leaders are the replicas whose log says they lead maintenance now
// (more "leads" lines than "no longer leads").
func (c *replicaCluster) leaders() []*replicaRun {
	var out []*replicaRun
	for _, r := range c.Replicas {
		if r.stop != nil && r.Log.Count("etcdstore: this replica leads maintenance") > r.Log.Count("etcdstore: this replica no longer leads maintenance") {
			out = append(out, r)
		}
	}
	return out
}

// waitLeader waits until exactly one running replica leads, and returns
// it.
func (c *replicaCluster) waitLeader() *replicaRun {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a failure bound
	for {
		l := c.leaders()
		if len(l) == 1 {
			return l[0]
		}
		if len(l) > 1 || time.Now().After(deadline) {
			names := make([]string, len(l))
			for n, r := range l {
				names[n] = r.Name
			}
			c.t.Fatalf("replicas leading: %v, want exactly one", names)
		}
		time.Sleep(20 * time.Millisecond) // a poll interval: the election decides
	}
}

// demoAttestation is a fresh test-negative attestation signed with key as
// demo-lab.
func demoAttestation(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	now := time.Now()
	var id [12]byte
	rand.Read(id[:])
	att, err := attestation.Sign(key, attestation.Claims{Attester: demoAttesterID, Kind: attestation.TestNegative,
		At: now.Add(-time.Hour).Unix(), Expires: now.Add(24 * time.Hour).Unix(), ID: base64.RawURLEncoding.EncodeToString(id[:])})
	if err != nil {
		t.Fatal(err)
	}
	return att
}

// redeem posts the attestations to base's /v1/tokens and returns the
// status (0 if the request failed, reported with t.Error: it may run off
// the test's goroutine).
func redeem(t *testing.T, base string, atts ...string) int {
	body, _ := json.Marshal(map[string][]string{"attestations": atts})
	resp, err := http.Post(base+"/v1/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// pin is the bundle key fingerprint the replica publishes.
func (r *replicaRun) pin(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(r.get(t, "/.well-known/healthcode/pin"))
}

// bundle is the trust bundle the replica serves, opened under pin.
func (r *replicaRun) bundle(t *testing.T, pin string) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Open(r.get(t, "/.well-known/healthcode/bundle"), pin)
	if err != nil {
		t.Fatalf("%s: %v", r.Name, err)
	}
	return b
}

func (r *replicaRun) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(r.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s%s: %d %v", r.URL, path, resp.StatusCode, err)
	}
	return string(b)
}

// getJSON GETs url into v and returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

// Three replicas act as one issuer: each says its etcd and Redis answer;
// the same attestation sent to all three at once redeems once; a policy
// set through one is in force on all within a second; one leads.
func TestReplicasServeAsOne(t *testing.T) {
	c := startReplicaCluster(t, 3, "--inventory-rounding", "1")

	for _, r := range c.Replicas {
		var h struct {
			Status string            `json:"status"`
			Parts  map[string]string `json:"parts"`
		}
		if code := getJSON(t, r.URL+"/healthz", &h); code != 200 || h.Status != "ok" || h.Parts["etcd"] != "ok" || h.Parts["redis"] != "ok" {
			t.Fatalf("%s /healthz: %d %+v", r.Name, code, h)
		}
	}

	// One attestation, three replicas, one moment.
	att := demoAttestation(t, c.DemoKey)
	codes := make([]int, len(c.Replicas))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for n, r := range c.Replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[n] = redeem(t, r.URL, att)
		}()
	}
	close(start)
	wg.Wait()
	ok, refused := 0, 0
	for _, code := range codes {
		switch code {
		case 200:
			ok++
		case 409:
			refused++
		}
	}
	if ok != 1 || refused != len(codes)-1 {
		t.Fatalf("one attestation sent to %d replicas at once: statuses %v, want one 200 and the rest 409", len(codes), codes)
	}

	// A policy set through replica 1, with the admin CLI.
	p := policy.Default()
	p.Version = 2
	p.Name = "set through one replica"
	raw, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.Dir, "policy.json")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	if code := run(context.Background(), []string{"admin", "policy", "set", file, "--url", c.Replicas[1].URL, "--token-file", c.AdminTokenFile()},
		strings.NewReader(""), io.Discard, &stderr); code != 0 {
		t.Fatalf("admin policy set: exit %d: %s", code, stderr.String())
	}
	set := time.Now()
	for _, r := range c.Replicas {
		for {
			var inv struct {
				PolicyVersion int `json:"policy_version"`
			}
			asked := time.Now()
			getJSON(t, r.URL+"/v1/inventory", &inv)
			if inv.PolicyVersion == p.Version {
				break
			}
			// Broken only if a question asked more than a second after
			// the change gets the old answer: a slow answer on a busy
			// machine is not a late change.
			if asked.Sub(set) > time.Second {
				t.Fatalf("%s still holds policy %d a second after version %d was set through %s", r.Name, inv.PolicyVersion, p.Version, c.Replicas[1].Name)
			}
			time.Sleep(10 * time.Millisecond) // a poll interval: the watch decides when it changes
		}
	}
	t.Logf("policy in force on all %d replicas %s after it was set", len(c.Replicas), time.Since(set).Round(time.Millisecond))

	// Each replica's inventory (a snapshot taken at its first read, after
	// the redemption) has Redis's replay record and count beside etcd's
	// categories.
	for _, r := range c.Replicas {
		var inv httpapi.InventoryJSON
		getJSON(t, r.URL+"/v1/inventory", &inv)
		got := map[string]int{}
		for _, cat := range inv.Categories {
			got[cat.Name] = cat.Count
		}
		if got[issuer.CategoryReplay] != 1 || got[issuer.CategoryCounts] != 1 || got[issuer.CategorySigningKeys] == 0 || got[issuer.CategoryConfiguration] == 0 || len(got) != 6 {
			t.Fatalf("%s inventory %v: want one replay record, one day counted, signing keys, configuration, and six categories", r.Name, got)
		}
	}

	// The key that signs, revoked through replica 2 with the admin CLI:
	// every replica serves a bundle that withdraws it within a second, and
	// redeems with the new key.
	pin := c.Replicas[0].pin(t)
	signing := ""
	for _, k := range c.Replicas[0].bundle(t, pin).Keys {
		if k.Status == bundle.StatusCurrent {
			signing = k.ID
		}
	}
	var out strings.Builder
	stderr.Reset()
	began := time.Now()
	if code := run(context.Background(), []string{"admin", "keys", "revoke", signing, "--json", "--url", c.Replicas[2].URL, "--token-file", c.AdminTokenFile()},
		strings.NewReader(""), &out, &stderr); code != 0 {
		t.Fatalf("admin keys revoke: exit %d: %s", code, stderr.String())
	}
	revoked := time.Now()
	t.Logf("revocation through a replica took %s", revoked.Sub(began).Round(time.Millisecond))
	var rev httpapi.RevocationJSON
	if err := json.Unmarshal([]byte(out.String()), &rev); err != nil || rev.Kid != signing || rev.SigningKid == signing {
		t.Fatalf("revocation %s: %+v, %v", out.String(), rev, err)
	}
	for _, r := range c.Replicas {
		for {
			asked := time.Now()
			b := r.bundle(t, pin)
			if b.Sequence >= rev.BundleSequence && b.IsWithdrawn(signing) {
				if k, ok := b.Find(rev.SigningKid); !ok || k.Status != bundle.StatusCurrent {
					t.Fatalf("%s serves bundle %d without %s as the current key", r.Name, b.Sequence, rev.SigningKid)
				}
				break
			}
			if asked.Sub(revoked) > time.Second { // as for the policy above
				t.Fatalf("%s serves bundle %d a second after bundle %d withdrew %s", r.Name, b.Sequence, rev.BundleSequence, signing)
			}
			time.Sleep(10 * time.Millisecond) // a poll interval: the watch decides when it changes
		}
		if code := redeem(t, r.URL, demoAttestation(t, c.DemoKey)); code != 200 {
			t.Fatalf("%s: a redemption after the revocation: %d", r.Name, code)
		}
	}

	// One replica leads maintenance; none gave it up while all ran.
	leader := c.waitLeader()
	for _, r := range c.Replicas {
		if r != leader && r.Log.Count("etcdstore: this replica leads maintenance") != 0 {
			t.Fatalf("%s led too:\n%s", r.Name, r.Log)
		}
	}
}

// A replica process sent SIGTERM stops in order and hands maintenance
// over: it exits 0 and another replica leads; the one left serves.
func TestReplicaSIGTERMHandsOverLeadership(t *testing.T) {
	c := startReplicaProcesses(t, 2)
	leader := c.waitLeader()
	if code := leader.Stop(); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM:\n%s", leader.Name, code, leader.Log)
	}
	stopped := time.Now()
	next := c.waitLeader()
	t.Logf("%s led %s after %s stopped", next.Name, time.Since(stopped).Round(time.Millisecond), leader.Name)
	if !strings.Contains(leader.Log.String(), `"msg":"shutting down"`) {
		t.Fatalf("%s did not shut down in order:\n%s", leader.Name, leader.Log)
	}
	var h struct {
		Status string `json:"status"`
	}
	if code := getJSON(t, next.URL+"/healthz", &h); code != 200 || h.Status != "ok" {
		t.Fatalf("%s /healthz after the handover: %d %+v", next.Name, code, h)
	}
}

// /healthz checks each part under its own timeout: with every etcd member
// stopped, a request to etcd waits out its deadline, and Redis still shows
// ok beside it (a stopped Redis refuses at once, so etcd's check never
// waited on it).
func TestReplicaHealthzOnePartDown(t *testing.T) {
	c := startReplicaCluster(t, 1, "--etcd-timeout", "2s")
	r := c.Replicas[0]
	if err := c.Etcd.Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // a failure bound: the cache holds an answer for a second
	for {
		var h struct {
			Status string            `json:"status"`
			Parts  map[string]string `json:"parts"`
		}
		code := getJSON(t, r.URL+"/healthz", &h)
		if h.Parts["etcd"] == "unreachable" {
			if code != 200 || h.Status != "degraded" || h.Parts["redis"] != "ok" {
				t.Fatalf("/healthz with etcd stopped: %d %+v, want 200, degraded, etcd unreachable, redis ok", code, h)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still %d %+v 30s after etcd stopped", code, h)
		}
		time.Sleep(100 * time.Millisecond) // a poll interval: the answer is cached for a second
	}
}

// A part down answers 503 `unavailable` with Retry-After, not 500, and the
// operator's log names the part: a redemption with every Redis node
// stopped, then an admin read with every etcd member stopped too.
func TestReplicaPartDownUnavailable(t *testing.T) {
	c := startReplicaCluster(t, 1, "--etcd-timeout", "2s")
	r := c.Replicas[0]
	if code := redeem(t, r.URL, demoAttestation(t, c.DemoKey)); code != 200 {
		t.Fatalf("a redemption with every part up: %d", code)
	}
	tok, err := os.ReadFile(c.AdminTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	unavailable := func(req *http.Request, part string) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body httpapi.ErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 503 || body.Error.Code != "unavailable" || resp.Header.Get("Retry-After") != "5" {
			t.Fatalf("%s %s with %s down: %d %+v, Retry-After %q; want 503 unavailable, Retry-After 5",
				req.Method, req.URL.Path, part, resp.StatusCode, body.Error, resp.Header.Get("Retry-After"))
		}
		var logged bool
		for _, line := range strings.Split(r.Log.String(), "\n") {
			logged = logged || strings.Contains(line, `"msg":"a part does not answer","part":"`+part+`","path":"`+req.URL.Path+`"`)
		}
		if !logged {
			t.Fatalf("no log line names %s for %s:\n%s", part, req.URL.Path, r.Log)
		}
	}

	if err := c.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string][]string{"attestations": {demoAttestation(t, c.DemoKey)}})
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/tokens", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	unavailable(req, "redis")

	if err := c.Etcd.Stop(); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest(http.MethodGet, r.URL+"/v1/admin/audit", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	unavailable(req, "etcd")
}

// Replica flags that make no sense together are refused before anything
// starts, naming the flags.
func TestReplicaFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	kekFile := filepath.Join(dir, "kek")
	if _, _, err := kek.LoadOrCreate(kekFile); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	replica := []string{"serve", "--data", data, "--etcd", "http://127.0.0.1:1", "--redis", "127.0.0.1:2"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"serve", "--data", data, "--etcd", "http://127.0.0.1:1"}, nil, "issuer: --etcd needs --redis: "},
		{[]string{"serve", "--data", data, "--redis", "127.0.0.1:2"}, nil, "issuer: --redis needs --etcd: "},
		{[]string{"serve", "--data", data}, map[string]string{etcdEnv: "http://127.0.0.1:1"}, "issuer: --etcd needs --redis: "},
		{[]string{"serve", "--data", data, "--redis-wait", "1"}, nil, "issuer: --redis-wait is for a replica: give --etcd and --redis too\n"},
		{[]string{"serve", "--data", data, "--etcd-ca", kekFile}, nil, "issuer: --etcd-ca is for a replica: give --etcd and --redis too\n"},
		{append(replica, "--etcd-cert", kekFile), nil, "issuer: --etcd-cert and --etcd-key go together\n"},
		{append(replica, "--redis-key", kekFile), nil, "issuer: --redis-cert and --redis-key go together\n"},
		{append(replica, "--etcd-user", "issuer"), nil, "issuer: --etcd-user and --etcd-password-file go together\n"},
		{append(replica, "--redis-user", "issuer"), nil, "issuer: --redis-user needs --redis-password-file\n"},
		{append(replica, "--etcd-ca", kekFile), nil, "issuer: --etcd endpoint http://127.0.0.1:1 is plain HTTP, but --etcd-ca or --etcd-cert asks for TLS: write it https://\n"},
		{append(replica, "--redis-wait", "1", "--redis-wait-timeout", "5s"), nil, "issuer: --redis-wait-timeout (5s) must be shorter than --redis-timeout (3s), or the client gives up before WAIT answers\n"},
		{append(replica, "--redis-wait", "-1"), nil, "issuer: --redis-wait must not be negative, got -1\n"},
		{append(replica, "--prefix", "healthcode"), nil, "issuer: --prefix must end in '/' and hold no '{' or '}', got \"healthcode\"\n"},
		{[]string{"serve", "--data", data, "--etcd", "http://127.0.0.1:1", "--redis", "nohost"}, nil, "issuer: --redis: want HOST:PORT, got \"nohost\"\n"},
		{replica, nil, "issuer: --kek FILE is required for a replica: every replica of one deployment uses the same key-encryption key file\n"},
		{append(replica, "--kek", filepath.Join(data, "kek")), nil, "issuer: --kek " + filepath.Join(data, "kek") + " is inside the data directory"},
		// Read before any connection: a missing password file is named.
		{append(replica, "--kek", kekFile, "--etcd-user", "issuer", "--etcd-password-file", filepath.Join(dir, "missing")), nil,
			"issuer: --etcd-password-file: open " + filepath.Join(dir, "missing")},
		{append(replica, "--kek", kekFile, "--redis-password-file", kekFile+".none"), nil, "issuer: --redis-password-file: open " + kekFile + ".none"},
		{append(replica, "--kek", kekFile, "--etcd-ca", kekFile, "--etcd", "https://127.0.0.1:1"), nil, "issuer: --etcd-ca " + kekFile + ": no PEM certificate in it\n"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var stderr strings.Builder
		code := run(context.Background(), tc.args, strings.NewReader(""), io.Discard, &stderr)
		for k := range tc.env {
			os.Unsetenv(k)
		}
		wantCode := 2
		if strings.Contains(tc.want, ": open ") || strings.Contains(tc.want, "no PEM") {
			wantCode = 1
		}
		if code != wantCode || !strings.HasPrefix(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tc.args[1:], code, stderr.String(), wantCode, tc.want)
		}
	}
	// Nothing was started: the data directory was not even made.
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("a refused start made the data directory: %v", err)
	}
}
