//go:build linux

package main

// Faults of issue 13 on real processes: issuer replicas (the built
// binary, `issuer serve --etcd --redis`) on a real 3-member etcd and 3+3
// Redis Cluster from internal/testcluster, all on 127.0.0.1, each test
// bounded in load and time. Times that are the point of a test (failover,
// takeover) are measured and logged; they are asserted only against
// generous bounds, never tight ones.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/policy"
)

// faultBound bounds every wait of these tests: generous, since two cores
// run ten servers, the replicas and the load.
const faultBound = testcluster.ReadyTimeout

// replicaSet is issuer replicas on a test etcd and Redis Cluster.
type replicaSet struct {
	t        *testing.T
	bin, dir string
	etcd     *testcluster.EtcdCluster
	redis    *testcluster.RedisCluster
	replicas []*issuerProc
	key      ed25519.PrivateKey
}

// startReplicaSet starts the servers and n replicas, one after another
// (the first makes the shared state: bundle key, keys, admin token, demo
// attester); first gets extra flags of the first replica only.
func startReplicaSet(t *testing.T, n int, first []string, extra ...string) *replicaSet {
	t.Helper()
	s := &replicaSet{t: t, bin: issuerBinary(t), dir: t.TempDir()}
	s.etcd = testcluster.StartEtcd(t)
	s.redis = testcluster.StartRedis(t)
	for i := 1; i <= n; i++ {
		args := extra
		if i == 1 {
			args = append(append([]string{}, first...), extra...)
		}
		p, err := startReplica(context.Background(), s.bin, s.dir, i, s.etcd.Endpoints(), s.redis.Addrs(), s.key, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			select {
			case <-p.exited:
			default:
				p.Kill()
			}
		})
		if i == 1 {
			if s.key, err = p.DemoKey(); err != nil {
				t.Fatal(err)
			}
		}
		s.replicas = append(s.replicas, p)
	}
	return s
}

func (s *replicaSet) urls(idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, s.replicas[i].URL)
	}
	return out
}

// outcome is one request of a faultLoad.
type outcome struct {
	start, end time.Time
	replica    int
	att        string
	status     int    // 0: no answer (transport error)
	code       string // the API's error code
}

// faultLoad sends fresh attestations from workers round-robin over
// targets until stopped, keeping every outcome.
type faultLoad struct {
	mu       sync.Mutex
	outcomes []outcome
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startFaultLoad(t *testing.T, key ed25519.PrivateKey, targets map[int]string, workers, pool int) *faultLoad {
	t.Helper()
	atts, err := presign(key, demoAttesterID, pool, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for i := range targets {
		ids = append(ids, i)
	}
	l := &faultLoad{stop: make(chan struct{})}
	client := newClient(workers, 10*time.Second)
	var next int
	var nextMu sync.Mutex
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				nextMu.Lock()
				n := next
				next++
				nextMu.Unlock()
				if n >= len(atts) {
					return
				}
				r := ids[n%len(ids)]
				o := outcome{start: time.Now(), replica: r, att: atts[n]}
				o.status, o.code, _ = redeemOnce(client, targets[r], atts[n])
				o.end = time.Now()
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

func (l *faultLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *faultLoad) snapshot() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outcome(nil), l.outcomes...)
}

// waitFor polls the outcomes until cond holds, failing after faultBound.
func (l *faultLoad) waitFor(t *testing.T, what string, cond func([]outcome) bool) {
	t.Helper()
	deadline := time.Now().Add(faultBound)
	for !cond(l.snapshot()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, faultBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countOK(outs []outcome, after time.Time) int {
	n := 0
	for _, o := range outs {
		if o.status == http.StatusOK && !o.start.Before(after) {
			n++
		}
	}
	return n
}

// redeemOnce posts one attestation: its status (0 if no answer), the
// error code, and the body of a 200.
func redeemOnce(client *http.Client, base, att string) (int, string, []byte) {
	resp, err := client.Post(base+"/v1/tokens", "application/json", strings.NewReader(body(att)))
	if err != nil {
		return 0, "", nil
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, "", nil
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", raw
	}
	var e httpapi.ErrorResponse
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Error.Code, nil
}

// refusedAgain re-sends every attestation answered 200 to the given
// replicas in turn: each must be refused as already redeemed.
func refusedAgain(t *testing.T, outs []outcome, urls []string) int {
	t.Helper()
	client := newClient(8, 10*time.Second)
	var answered []string
	for _, o := range outs {
		if o.status == http.StatusOK {
			answered = append(answered, o.att)
		}
	}
	var mu sync.Mutex
	var bad []string
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				status, code, _ := redeemOnce(client, urls[n%len(urls)], answered[n])
				if status != http.StatusConflict || code != issuer.CodeAlreadyRedeemed {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d %q", status, code))
					mu.Unlock()
				}
			}
		}()
	}
	for n := range answered {
		work <- n
	}
	close(work)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d attestations answered with codes were not refused as already redeemed when sent again; first: %s", len(bad), len(answered), bad[0])
	}
	return len(answered)
}

// TestFaultReplicaKilledUnderLoad: a replica SIGKILLed under load; the
// others go on answering, and no attestation answered with codes (by any
// replica, the killed one included) redeems again.
func TestFaultReplicaKilledUnderLoad(t *testing.T) {
	s := startReplicaSet(t, 3, nil)
	l := startFaultLoad(t, s.key, map[int]string{0: s.replicas[0].URL, 1: s.replicas[1].URL, 2: s.replicas[2].URL}, 12, 20000)
	l.waitFor(t, "200 redemptions before the kill", func(outs []outcome) bool { return countOK(outs, time.Time{}) >= 200 })
	killed := time.Now() // before: requests fail while Kill waits for the exit
	s.replicas[2].Kill()
	l.waitFor(t, "200 redemptions by the others after the kill", func(outs []outcome) bool { return countOK(outs, killed) >= 200 })
	l.halt()
	outs := l.snapshot()

	cut := 0
	for _, o := range outs {
		switch {
		case o.replica == 2 && o.end.After(killed) && o.status != http.StatusOK:
			// Cut off or refused connection: the killed one's only failures.
			if o.status != 0 {
				t.Errorf("killed replica answered %d %s after the kill", o.status, o.code)
			}
			cut++
		case o.status != http.StatusOK:
			t.Errorf("replica %d answered %d %q (the others must go on)", o.replica+1, o.status, o.code)
		}
	}
	n := refusedAgain(t, outs, s.urls(0, 1))
	t.Logf("replica 3 killed after %d answered redemptions; %d requests to it cut off; %d answered in all, each refused when sent again",
		countOK(outs, time.Time{})-countOK(outs, killed), cut, n)
}

// TestFaultRedisMasterKilledUnderLoad: a Redis master SIGKILLed under load
// through two replicas (AOF always), its replica promoted.
//
// With --redis-wait 1 (WAIT for one Redis replica before answering): with
// one Redis replica per master, WAIT refuses writes on that shard until
// the old master is back as a replica, so the test restarts it (as an
// operator's supervisor would); no answered attestation redeems again.
//
// With --redis-wait 0 (the replicas' default) the promoted replica serves
// at once; answered attestations it never received (replication is
// asynchronous) redeem again: counted and logged, what a failover can
// lose.
//
// Either way redemptions resume: the longest any request waited after the
// kill and the last failure are logged (issue 13 item 4's figure), the
// wait bounded by redemptionResume.
func TestFaultRedisMasterKilledUnderLoad(t *testing.T) {
	for _, wait := range []int{1, 0} {
		t.Run(fmt.Sprintf("redis-wait=%d", wait), func(t *testing.T) { redisMasterKilled(t, wait) })
	}
}

// redemptionResume bounds how long a request may wait after a Redis
// master is killed: measured 4.5–5.8 s here (promotion after 2.9–3.8 s with
// cluster-node-timeout 2000); a client that kept dialling the dead master
// (go-redis's defaults: 57 s) would exceed it.
const redemptionResume = 30 * time.Second

func redisMasterKilled(t *testing.T, wait int) {
	s := startReplicaSet(t, 2, nil, "--redis-wait", fmt.Sprint(wait))
	l := startFaultLoad(t, s.key, map[int]string{0: s.replicas[0].URL, 1: s.replicas[1].URL}, 12, 40000)
	l.waitFor(t, "200 redemptions before the kill", func(outs []outcome) bool { return countOK(outs, time.Time{}) >= 200 })

	masters, err := s.redis.Masters()
	if err != nil || len(masters) != 3 {
		t.Fatalf("masters: %d, %v", len(masters), err)
	}
	victim := masters[0]
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	var promoted time.Duration
	deadline := killed.Add(faultBound)
	for {
		ms, err := s.redis.Masters()
		if err == nil && len(ms) == 3 {
			promoted = time.Since(killed)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Redis replica promoted within %s: %v", faultBound, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	restarted := "not restarted"
	if wait > 0 {
		if err := s.redis.Restart(victim); err != nil {
			t.Fatal(err)
		}
		restarted = fmt.Sprintf("restarted at %s", time.Since(killed).Round(time.Millisecond))
	}
	// Resumed: 300 answers in a row, all 200, after the last failure (a
	// shard still refusing would fail about one request in three).
	const streak = 300
	l.waitFor(t, fmt.Sprintf("%d redemptions in a row after the failover", streak), func(outs []outcome) bool {
		return countOK(outs, maxTime(lastFailure(outs), killed)) >= streak
	})
	l.halt()
	outs := l.snapshot()
	failed, kinds := 0, map[string]int{}
	for _, o := range outs {
		if o.status == http.StatusOK {
			continue
		}
		failed++
		kinds[fmt.Sprintf("%d %s", o.status, o.code)]++
		if o.status >= 400 && o.status < 500 {
			t.Errorf("a fresh attestation answered %d %q during the failover (want 200 or an unavailable answer)", o.status, o.code)
		}
	}
	// The interruption a client saw: the longest any request waited after
	// the kill (requests on the killed shard are held, retried, or fail),
	// and the last failure.
	var held time.Duration
	for _, o := range outs {
		if o.end.After(killed) {
			held = max(held, o.end.Sub(maxTime(o.start, killed)))
		}
	}
	lastFail := time.Duration(0)
	if last := lastFailure(outs); !last.IsZero() {
		lastFail = last.Sub(killed)
	}
	if held > redemptionResume || lastFail > redemptionResume {
		t.Errorf("redemptions held %s and failing until %s after the kill (bound %s)", held, lastFail, redemptionResume)
	}
	var answered, lost int
	if wait > 0 {
		answered = refusedAgain(t, outs, s.urls(0, 1))
	} else {
		answered, lost = redeemedAgain(t, outs, s.urls(0, 1))
	}
	t.Logf("--redis-wait %d, Redis master killed under load: replica promoted after %s, old master %s; the longest a request waited after the kill %s; %d failed %v (the last %s after the kill), then %d+ in a row answered; of %d answered, %d redeemed again",
		wait, promoted.Round(time.Millisecond), restarted, held.Round(time.Millisecond), failed, kinds, lastFail.Round(time.Millisecond), streak, answered, lost)
}

// redeemedAgain re-sends every attestation answered 200 and counts those
// that redeem again (lost in a failover); any answer but 200 or
// already_redeemed fails the test.
func redeemedAgain(t *testing.T, outs []outcome, urls []string) (answered, lost int) {
	t.Helper()
	client := newClient(8, 10*time.Second)
	for _, o := range outs {
		if o.status != http.StatusOK {
			continue
		}
		status, code, _ := redeemOnce(client, urls[answered%len(urls)], o.att)
		answered++
		switch {
		case status == http.StatusOK:
			lost++
		case status != http.StatusConflict || code != issuer.CodeAlreadyRedeemed:
			t.Errorf("an answered attestation sent again: %d %q", status, code)
		}
	}
	return answered, lost
}

func lastFailure(outs []outcome) time.Time {
	var last time.Time
	for _, o := range outs {
		if o.status != http.StatusOK && o.end.After(last) {
			last = o.end
		}
	}
	return last
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// etcdLeader is the member whose /metrics says it leads.
func etcdLeader(t *testing.T, ec *testcluster.EtcdCluster) *testcluster.Node {
	t.Helper()
	client := newClient(1, 5*time.Second)
	for _, m := range ec.Members {
		resp, err := client.Get("http://" + m.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("\netcd_server_is_leader 1\n")) {
			return m
		}
	}
	t.Fatal("no etcd member says it leads")
	return nil
}

// TestFaultEtcdMemberKilled: the etcd leader SIGKILLed under load through
// two replicas. Redemptions go on, and an admin call made through each
// replica (an attester added, then listed through the other) succeeds.
func TestFaultEtcdMemberKilled(t *testing.T) {
	s := startReplicaSet(t, 2, nil)
	l := startFaultLoad(t, s.key, map[int]string{0: s.replicas[0].URL, 1: s.replicas[1].URL}, 8, 20000)
	l.waitFor(t, "100 redemptions before the kill", func(outs []outcome) bool { return countOK(outs, time.Time{}) >= 100 })
	victim := etcdLeader(t, s.etcd)
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	l.waitFor(t, "200 redemptions after the kill", func(outs []outcome) bool { return countOK(outs, killed) >= 200 })

	// Admin calls through each replica, as an operator makes them.
	tokenFile := filepath.Join(s.replicas[0].Dir, "admin.token")
	pub := keyfile.EncodePublic(keyOf(9).Public().(ed25519.PublicKey))
	for i, p := range s.replicas {
		id := fmt.Sprintf("lab-after-kill-%d", i+1)
		var refusals []string
		took := pollUntil(t, "attester "+id+" added through replica "+fmt.Sprint(i+1), func() error {
			_, err := adminCLI(s.bin, p.URL, tokenFile, "attesters", "add", "--id", id, "--key", pub)
			if err != nil {
				refusals = append(refusals, err.Error())
			}
			return err
		})
		other := s.replicas[(i+1)%len(s.replicas)]
		pollUntil(t, "attester "+id+" listed through the other replica", func() error {
			list, err := adminCLI(s.bin, other.URL, tokenFile, "attesters", "list")
			if err == nil && !strings.Contains(list, id) {
				err = fmt.Errorf("not listed: %q", list)
			}
			return err
		})
		t.Logf("admin call through replica %d: done %s after the etcd leader was killed, in %s; %d refused before: %q",
			i+1, time.Since(killed).Round(time.Millisecond), took.Round(time.Millisecond), len(refusals), refusals)
	}
	l.halt()
	outs := l.snapshot()
	failed := 0
	for _, o := range outs {
		if o.status != http.StatusOK {
			failed++
			if failed <= 5 {
				t.Errorf("replica %d answered %d %q with an etcd member down", o.replica+1, o.status, o.code)
			}
		}
	}
	t.Logf("etcd leader %s killed: %d redemptions answered, %d failed", victim.Name, countOK(outs, time.Time{}), failed)
}

// adminCLI runs `issuer admin` against url: its output, or an error
// with its stderr.
func adminCLI(bin, url, tokenFile string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), faultBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"admin", "--url", url, "--token-file", tokenFile}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("issuer admin %s: %v: %s", args[0]+" "+args[1], err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func pollUntil(t *testing.T, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > faultBound {
			t.Fatalf("%s: not within %s: %v", what, faultBound, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// maintenanceLeader is the replica id holding the maintenance election
// (etcdstore's Lead: the oldest key under PREFIX/leader/).
func maintenanceLeader(cli *clientv3.Client) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := cli.Get(ctx, "/healthcode/leader/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(r.Kvs) == 0 {
		return "", errors.New("no leader")
	}
	return string(r.Kvs[0].Value), nil
}

// publishedBundle fetches and opens the bundle a replica serves.
func publishedBundle(base, pin string) (*bundle.Bundle, error) {
	client := newClient(1, 5*time.Second)
	resp, err := client.Get(base + "/.well-known/healthcode/bundle")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, err
	}
	return bundle.Open(strings.TrimSpace(string(raw)), pin)
}

// tokenKid is the kid in a token's JWS header.
func tokenKid(tok string) (string, error) {
	h, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", errors.New("not a JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", err
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	return hdr.Kid, json.Unmarshal(raw, &hdr)
}

// TestFaultMaintenanceLeaderKilled: the replica leading maintenance is
// SIGKILLed. Another takes over once the dead one's session lapses (TTL
// 5 s), rotates keys on the policy's schedule (every 10 s here) and signs
// bundles whose sequence is above every one the old leader published; a
// verifier that synced from the old leader syncs from another replica
// (verifier sync, the pinned fingerprint) and accepts a token signed by a
// key made after the takeover.
func TestFaultMaintenanceLeaderKilled(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(pol, shortSchedulePolicy(t), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startReplicaSet(t, 3, []string{"--policy", pol})
	pin := s.replicas[0].Pin
	if pin == "" {
		t.Fatal("the first replica named no bundle key fingerprint")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var leaderID string
	pollUntil(t, "a maintenance leader", func() error {
		leaderID, err = maintenanceLeader(cli)
		return err
	})
	old := -1
	for i := range s.replicas {
		if leaderID == fmt.Sprintf("replica-%d", i+1) {
			old = i
		}
	}
	if old < 0 {
		t.Fatalf("leader %q is none of the replicas", leaderID)
	}

	// A verifier syncs from the old leader, as a user would.
	vbin := verifierBinary(t)
	vdir := t.TempDir()
	vbundle, vconf := filepath.Join(vdir, "bundle.jws"), filepath.Join(vdir, "verifier.json")
	verifierCLI(t, vbin, 0, "sync", s.replicas[old].URL, "--pin", pin, "--bundle", vbundle, "--config", vconf)

	// The old leader's last bundle, and every key it published.
	before, err := publishedBundle(s.replicas[old].URL, pin)
	if err != nil {
		t.Fatal(err)
	}
	oldKids := map[string]bool{}
	for _, k := range before.Keys {
		oldKids[k.ID] = true
	}
	s.replicas[old].Kill()
	killed := time.Now()
	// The highest sequence the old leader published is at most what
	// any replica serves now (it is dead: no more).
	var oldSeq uint64
	for i, p := range s.replicas {
		if i == old {
			continue
		}
		b, err := publishedBundle(p.URL, pin)
		if err != nil {
			t.Fatal(err)
		}
		oldSeq = max(oldSeq, b.Sequence, before.Sequence)
	}

	var newID string
	pollUntil(t, "another maintenance leader", func() error {
		id, err := maintenanceLeader(cli)
		if err != nil {
			return err
		}
		if id == leaderID {
			return fmt.Errorf("still %s", id)
		}
		newID = id
		return nil
	})
	takeover := time.Since(killed)
	// The dead leader's session lapses within its TTL (5 s); three TTLs
	// leave room for a loaded machine and still catch a takeover that
	// waits for anything else.
	if takeover > 15*time.Second {
		t.Errorf("another replica led %s after the leader was killed, want within about the session TTL (5 s)", takeover)
	}
	survivors := []int{}
	for i := range s.replicas {
		if i != old {
			survivors = append(survivors, i)
		}
	}

	// A key made after the takeover becomes current on schedule and signs
	// tokens; the bundle carrying it is above the old leader's sequence.
	client := newClient(2, 10*time.Second)
	var tok, kid string
	fresh, err := presign(s.key, demoAttesterID, 400, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	pollUntil(t, "a token signed by a key the old leader never published", func() error {
		if n >= len(fresh) {
			t.Fatal("ran out of attestations")
		}
		status, code, raw := redeemOnce(client, s.replicas[survivors[n%len(survivors)]].URL, fresh[n])
		n++
		if status != http.StatusOK {
			return fmt.Errorf("redeem: %d %s", status, code)
		}
		var r httpapi.TokensResponse
		if err := json.Unmarshal(raw, &r); err != nil || len(r.Tokens) == 0 {
			return fmt.Errorf("answer: %v", err)
		}
		tok = r.Tokens[0].Token
		if kid, err = tokenKid(tok); err != nil {
			return err
		}
		if oldKids[kid] {
			time.Sleep(500 * time.Millisecond)
			return fmt.Errorf("still signed by %s", kid)
		}
		return nil
	})
	rotated := time.Since(killed)
	for _, i := range survivors {
		b, err := publishedBundle(s.replicas[i].URL, pin)
		if err != nil {
			t.Fatal(err)
		}
		if b.Sequence <= oldSeq {
			t.Errorf("replica %d serves bundle %d, not above the old leader's %d", i+1, b.Sequence, oldSeq)
		}
		if _, ok := b.Find(kid); !ok {
			t.Errorf("replica %d's bundle (sequence %d) lacks the signing key %s", i+1, b.Sequence, kid)
		}
	}

	// The verifier syncs from each survivor (no rollback refused) and
	// accepts the token.
	for _, i := range survivors {
		verifierCLI(t, vbin, 0, "sync", s.replicas[i].URL, "--bundle", vbundle, "--config", vconf)
		verifierCLI(t, vbin, 0, "check", "--bundle", vbundle, "--config", vconf, tok)
	}
	t.Logf("maintenance leader %s killed; %s led %s later (session TTL 5 s); a key the old leader never published signed tokens %s after the kill (rotation 10 s, a key published a bundle lifetime, 20 s, before it signs); bundles above sequence %d on every survivor, accepted by verifier sync and check",
		leaderID, newID, takeover.Round(time.Millisecond), rotated.Round(time.Millisecond), oldSeq)
}

// shortSchedulePolicy is the default policy with keys rotating every 10 s
// and bundles living 20 s, so that a schedule can be watched in a test.
func shortSchedulePolicy(t *testing.T) []byte {
	t.Helper()
	p := policy.Default()
	p.Version++
	h := policy.Duration(time.Hour)
	p.Tokens.Lifetime = policy.Lifetimes{Green: h, Yellow: h, Red: h}
	p.Tokens.Horizon = 2 * h
	p.Renewal.Period, p.Renewal.Overlap = 2*h, 0
	p.Keys.Lifetime, p.Keys.Rotation = 3*h, policy.Duration(10*time.Second)
	p.Bundle.StaleAfter, p.Bundle.Lifetime = policy.Duration(10*time.Second), policy.Duration(20*time.Second)
	p.Retention.SweepInterval = policy.Duration(2 * time.Second)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	raw, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

var (
	verifierOnce sync.Once
	verifierBin  string
	verifierErr  error
	verifierOut  []byte
)

// verifierBinary builds cmd/verifier once, beside the issuer binary.
func verifierBinary(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(issuerBinary(t))
	verifierOnce.Do(func() {
		verifierBin = filepath.Join(dir, "verifier")
		verifierOut, verifierErr = exec.Command("go", "build", "-o", verifierBin, "github.com/healthcode/healthcode/cmd/verifier").CombinedOutput()
	})
	if verifierErr != nil {
		t.Fatalf("build verifier: %v\n%s", verifierErr, verifierOut)
	}
	return verifierBin
}

// verifierCLI runs the verifier as a user would and wants exit status
// want.
func verifierCLI(t *testing.T, bin string, want int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != want {
		t.Fatalf("verifier %s: exit %d, want %d: %s%s", args[0], code, want, out.String(), errb.String())
	}
	return out.String()
}

// TestClusterBenchRuns: make bench-cluster's run, short: every replica
// count gets its figures, the memory figure is there, and the temp dir is
// gone afterwards.
func TestClusterBenchRuns(t *testing.T) {
	parent := t.TempDir()
	o := clusterOptions{issuerBin: issuerBinary(t), replicas: 2, concurrency: 8, duration: 2 * time.Second,
		timeout: 10 * time.Second, redisWait: 1, memoryRecords: 2000, tmpParent: parent}
	var stderr bytes.Buffer
	res, err := cluster(context.Background(), o, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if len(res.Runs) != 2 || res.Memory == nil || res.Memory.BytesPerRecord <= 0 || res.Memory.KeysAdded < 2000 {
		t.Fatalf("result %+v", res)
	}
	for i, run := range res.Runs {
		if run.Replicas != i+1 || run.Load.OK == 0 || run.Load.ErrorCount != 0 || run.RedisReads < 1 || len(run.CPU) != 6 {
			t.Fatalf("run %d: %+v", i+1, run)
		}
		for _, k := range run.CPU {
			if want, ok := map[string]int{"issuer": i + 1, "redis-server": 6, "etcd": 3, "redis masters": 3, "redis replicas": 3}[k.Kind]; ok && k.Processes != want {
				t.Errorf("run %d: %s: %d processes", i+1, k.Kind, k.Processes)
			}
		}
		if len(run.Load.More) != i {
			t.Errorf("run %d: load went to %d more replicas", i+1, len(run.Load.More))
		}
	}
	var out bytes.Buffer
	printCluster(&out, res)
	if !strings.Contains(out.String(), "bench-cluster: replicas=2 ") || !strings.Contains(out.String(), "Not covered:") {
		t.Fatalf("report:\n%s", out.String())
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Fatalf("left behind in the temp dir: %v", left)
	}
}
