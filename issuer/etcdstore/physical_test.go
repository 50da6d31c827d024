package etcdstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
)

// purgeWait bounds the wait for every member's purge loop (every 30 s in
// etcd) to remove the WAL segment the scrub released, with room for a
// loaded machine.
const purgeWait = 90 * time.Second

func newClient(t *testing.T, ec *testcluster.EtcdCluster) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func scrubOf(cli *clientv3.Client, ec *testcluster.EtcdCluster) Scrub {
	return Scrub{Client: cli, Endpoints: ec.Endpoints(), Prefix: "/hc/", SnapshotCount: testcluster.EtcdSnapshotCount}
}

// writeSecrets writes records as the store writes them (a signing key
// sealed under the KEK, an audit entry and a policy history entry with
// unique details) and a live policy, and returns the byte strings that must
// be gone once the records are deleted.
func writeSecrets(t *testing.T, ctx context.Context, cli *clientv3.Client) []forensic.Pattern {
	t.Helper()
	key, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	sealed, err := key.Seal(seed, []byte("healthcode/signing-key/k-retired"))
	if err != nil {
		t.Fatal(err)
	}
	tag := make([]byte, 8)
	if _, err := rand.Read(tag); err != nil {
		t.Fatal(err)
	}
	audit := "FORENSIC-AUDIT-" + hex.EncodeToString(tag)
	policy := "FORENSIC-POLICY-" + hex.EncodeToString(tag)

	// The audit entry is held by a lease, as a record with a deadline is;
	// the sweep revokes it. The others are deleted by key.
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/hc/audit/0001", `{"admin":"ops","action":"attester.add","detail":"`+audit+`"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/hc/keys/signing/k-retired", string(sealed)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/hc/policy/history/1", `{"version":1,"note":"`+policy+`"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/hc/policy/current", `{"version":2,"note":"LIVE-POLICY"}`); err != nil {
		t.Fatal(err)
	}
	return []forensic.Pattern{
		{What: "sealed signing key", Bytes: sealed},
		{What: "sealed signing key (its last 24 bytes)", Bytes: sealed[len(sealed)-24:]},
		{What: "audit detail", Bytes: []byte(audit)},
		{What: "policy history", Bytes: []byte(policy)},
	}
}

// deleteSecrets deletes them as a sweep does: the lease revoked, the rest
// in one transaction.
func deleteSecrets(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	ls, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls.Leases {
		if _, err := cli.Revoke(ctx, l.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Txn(ctx).Then(
		clientv3.OpDelete("/hc/keys/signing/k-retired"),
		clientv3.OpDelete("/hc/policy/history/", clientv3.WithPrefix()),
	).Commit(); err != nil {
		t.Fatal(err)
	}
}

// hitsOn is every pattern found in one member's data directory (WAL,
// snapshots and the backend file).
func hitsOn(t *testing.T, m *testcluster.Node, ps []forensic.Pattern) []string {
	t.Helper()
	return forensic.Hits(t, m.Dir, ps)
}

// waitClean polls until no member in ms holds any pattern, failing the
// test after purgeWait; it returns how long that took.
func waitClean(t *testing.T, ms []*testcluster.Node, ps []forensic.Pattern) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var left []string
		for _, m := range ms {
			for _, h := range hitsOn(t, m, ps) {
				left = append(left, m.Name+": "+h)
			}
		}
		if len(left) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > purgeWait {
			for _, m := range ms {
				t.Logf("%s holds %s", m.Name, listData(t, m))
			}
			t.Fatalf("after %s the deleted records are still on disk: %s", purgeWait, strings.Join(left, "; "))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func listData(t *testing.T, m *testcluster.Node) string {
	t.Helper()
	var out []string
	for _, sub := range []string{"wal", "snap"} {
		es, err := os.ReadDir(filepath.Join(m.Dir, "data", "member", sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s/%s (%d bytes)", sub, e.Name(), fi.Size()))
		}
	}
	return strings.Join(out, ", ")
}

// storageWrites is what a member process has written to storage so far
// (Linux /proc/PID/io write_bytes), to measure what a scrub costs.
func storageWrites(t *testing.T, m *testcluster.Node) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", m.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no write_bytes in /proc/%d/io", m.PID())
	return 0
}

// TestScrubLeavesNoWALWithoutFlush shows why the flush is there:
// compaction and defragmentation alone clean every member's backend file
// but leave every deleted value in every member's WAL.
func TestScrubLeavesNoWALWithoutFlush(t *testing.T) {
	ec := testcluster.StartEtcd(t)
	cli := newClient(t, ec)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ps := writeSecrets(t, ctx, cli)
	deleteSecrets(t, ctx, cli)
	rep, err := scrubOf(cli, ec).Run(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Flushed || rep.Defragmented != 3 {
		t.Fatalf("scrub without deletion: %+v", rep)
	}
	for _, m := range ec.Members {
		h := hitsOn(t, m, ps)
		if len(h) == 0 {
			t.Fatalf("%s: compaction and defragmentation alone removed everything; the WAL flush may be unneeded on this etcd", m.Name)
		}
		for _, x := range h {
			if !strings.HasSuffix(x, ".wal") {
				t.Fatalf("%s after compaction and defragmentation: %s (outside the WAL)", m.Name, x)
			}
		}
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// TestSweepForensic is invariant 5 on etcd from a disk thief's side, the
// bbolt forensic test run on a 3-member cluster: records written through
// the store (a sealed signing key, an audit entry and a policy history
// entry with unique details) and deleted by its Sweep leave no byte in any
// member's data directory (WAL, snapshots, backend file), while a control
// finds each of them on every member before. It also measures what the
// sweep's scrub costs:
//
//	go test -count=1 -run TestSweepForensic -v ./issuer/etcdstore/
func TestSweepForensic(t *testing.T) {
	ec := testcluster.StartEtcd(t)
	cli := newClient(t, ec)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	key, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: t0}
	const prefix = "/forensic/"
	s, err := New(ctx, cli, Options{Prefix: prefix, KEK: key, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	due, live := t0.Add(time.Hour), t0.Add(30*24*time.Hour)

	tag := make([]byte, 8)
	if _, err := rand.Read(tag); err != nil {
		t.Fatal(err)
	}
	audit := "FORENSIC-AUDIT-" + hex.EncodeToString(tag)
	note := "FORENSIC-POLICY-" + hex.EncodeToString(tag)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutSigningKey(ctx, issuer.SigningKey{ID: "k-retired", Private: priv, Created: t0, ActiveAt: t0,
		NotBefore: t0, NotAfter: due.Add(-time.Minute), DestroyAt: due}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "attester.add", Detail: audit}, due); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "policy.set", Detail: "LIVE-AUDIT"}, live); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPolicy(ctx, issuer.PolicyRecord{Version: 1, Raw: []byte(`{"version":1,"note":"` + note + `"}`), Set: t0}, due); err != nil {
		t.Fatal(err)
	}
	// Version 1 as it was stored while in force: replaced, it is history
	// with a deadline, and its old value must go with it.
	v1, err := cli.Get(ctx, prefix+"config/policy")
	if err != nil || len(v1.Kvs) != 1 {
		t.Fatalf("policy 1 as stored: %v %v", v1, err)
	}
	if err := s.PutPolicy(ctx, issuer.PolicyRecord{Version: 2, Raw: []byte(`{"version":2}`), Set: t0}, due); err != nil {
		t.Fatal(err)
	}

	// What a thief must not find: the records as etcd holds them (the
	// signing key's value carries its sealed private part), their details,
	// and the private key in any form (never on disk, sealed or not).
	ps := []forensic.Pattern{{What: "audit detail", Bytes: []byte(audit)}, {What: "policy 1 while in force", Bytes: v1.Kvs[0].Value}}
	for _, dir := range []string{"keys/", "audit/", "policy_history/"} {
		r, err := cli.Get(ctx, prefix+dir, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range r.Kvs {
			if bytes.Contains(kv.Value, []byte("LIVE-AUDIT")) {
				continue
			}
			ps = append(ps, forensic.Pattern{What: "stored " + dir + " record", Bytes: kv.Value})
		}
	}
	if len(ps) != 5 {
		t.Fatalf("%d patterns, want the key, audit entry and policy history records and two details", len(ps))
	}
	never := []forensic.Pattern{
		{What: "private key", Bytes: priv},
		{What: "private key seed", Bytes: priv.Seed()},
		{What: "private key seed, base64", Bytes: []byte(base64.StdEncoding.EncodeToString(priv.Seed()))},
		{What: "private key seed, hex", Bytes: []byte(hex.EncodeToString(priv.Seed()))},
	}
	for _, m := range ec.Members {
		h := strings.Join(hitsOn(t, m, ps), "\n")
		for _, p := range ps {
			if !strings.Contains(h, p.What+" in ") {
				t.Fatalf("control: %s not found on %s before the sweep (hits: %s)", p.What, m.Name, h)
			}
		}
		if h := hitsOn(t, m, never); len(h) != 0 {
			t.Fatalf("%s holds the signing key unsealed: %v", m.Name, h)
		}
	}

	before := make([]int64, len(ec.Members))
	for i, m := range ec.Members {
		before[i] = storageWrites(t, m)
	}
	clk.Set(due)
	start := time.Now()
	st, err := s.Sweep(ctx, due)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted[issuer.CategoryAudit] != 1 || st.Deleted[issuer.CategorySigningKeys] != 1 ||
		st.Deleted[issuer.CategoryPolicyHistory] != 1 || !st.Compacted {
		t.Fatalf("sweep: %+v", st)
	}
	for i, m := range ec.Members {
		t.Logf("%s wrote %.1f MB to storage during the sweep", m.Name, float64(storageWrites(t, m)-before[i])/1e6)
	}
	purged := waitClean(t, ec.Members, append(ps, never...))
	t.Logf("sweep with its scrub took %s; every member clean %s after it returned", took.Round(time.Millisecond), purged.Round(time.Second))

	// Live state is untouched.
	if got, err := s.Audit(ctx); err != nil || len(got) != 1 || got[0].Detail != "LIVE-AUDIT" {
		t.Fatalf("audit after the sweep: %v %v", got, err)
	}
	if p, err := s.Policy(ctx); err != nil || p.Version != 2 {
		t.Fatalf("policy after the sweep: %+v %v", p, err)
	}
	// Nothing left to flush: the next sweep only compacts and defragments.
	before[0] = storageWrites(t, ec.Members[0])
	if _, err := s.Sweep(ctx, due.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if w := storageWrites(t, ec.Members[0]) - before[0]; w > WALSegmentBytes/2 {
		t.Fatalf("a sweep that deleted nothing wrote %d bytes on %s: it flushed", w, ec.Members[0].Name)
	}
}

// TestScrubMemberDown: with one member killed the scrub still flushes,
// compacts and defragments through the other two, reports the dead member
// without waiting past its timeout, and the live members forget the
// deleted records. The dead member catches up on the flush in one batch
// when it is back, so the scrub left its pending mark: the next run
// flushes again, and then every member is clean.
func TestScrubMemberDown(t *testing.T) {
	ec := testcluster.StartEtcd(t)
	cli := newClient(t, ec)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ps := writeSecrets(t, ctx, cli)
	deleteSecrets(t, ctx, cli)

	down := ec.Members[0]
	if err := down.Kill(); err != nil {
		t.Fatal(err)
	}
	sc := scrubOf(cli, ec)
	sc.Timeout = 3 * time.Second
	start := time.Now()
	rep, err := sc.Run(ctx, true)
	t.Logf("scrub with %s down returned after %s: %v", down.Name, time.Since(start).Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "status of http://"+down.Addr) {
		t.Fatalf("scrub with %s down: %v, want it reported", down.Name, err)
	}
	if !rep.Flushed || rep.Defragmented != 2 {
		t.Fatalf("scrub with %s down: %+v", down.Name, rep)
	}
	waitClean(t, ec.Members[1:], ps)

	if err := ec.Restart(down); err != nil {
		t.Fatal(err)
	}
	rep, err = sc.Run(ctx, false)
	if err != nil || !rep.Flushed || rep.Defragmented != 3 {
		t.Fatalf("scrub after %s is back: %+v %v, want a flush on the pending mark", down.Name, rep, err)
	}
	took := waitClean(t, ec.Members, ps)
	t.Logf("%s clean %s after it was back and scrubbed", down.Name, took.Round(time.Second))
	if rep, err := sc.Run(ctx, false); err != nil || rep.Flushed {
		t.Fatalf("third scrub: %+v %v, want no flush", rep, err)
	}
}

// TestScrubPendingMark: a deletion outside a sweep (a revocation on any
// replica) marks the next scrub to flush, once.
func TestScrubPendingMark(t *testing.T) {
	ec := testcluster.StartEtcd(t)
	cli := newClient(t, ec)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc := scrubOf(cli, ec)
	if _, err := cli.Put(ctx, "/hc/keys/signing/k1", "sealed"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete("/hc/keys/signing/k1"), sc.Pending()).Commit(); err != nil {
		t.Fatal(err)
	}
	rep, err := sc.Run(ctx, false)
	if err != nil || !rep.Flushed {
		t.Fatalf("scrub after a marked deletion: %+v %v, want a flush", rep, err)
	}
	rep, err = sc.Run(ctx, false)
	if err != nil || rep.Flushed {
		t.Fatalf("second scrub: %+v %v, want no flush", rep, err)
	}
}

func TestScrubRefusesBadSettings(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, tc := range []struct {
		s    Scrub
		want string
	}{
		{Scrub{Endpoints: []string{"http://127.0.0.1:1"}, SnapshotCount: 1000}, "etcdstore: scrub needs a client and every member's endpoint"},
		{Scrub{Client: cli, SnapshotCount: 1000}, "etcdstore: scrub needs a client and every member's endpoint"},
		{Scrub{Client: cli, Endpoints: []string{"http://127.0.0.1:1"}}, "etcdstore: scrub: snapshot count must be the members' --snapshot-count, 1 to 100000, got 0"},
		{Scrub{Client: cli, Endpoints: []string{"http://127.0.0.1:1"}, SnapshotCount: 100001}, "etcdstore: scrub: snapshot count must be the members' --snapshot-count, 1 to 100000, got 100001"},
	} {
		if _, err := tc.s.Run(context.Background(), true); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: got %v, want %q", tc.s, err, tc.want)
		}
	}
}

// The test clusters' members, and make cluster's (which takes
// testcluster's figure), snapshot as often as the store's sweep assumes: a
// larger --snapshot-count would leave deleted values in their WAL.
func TestClusterSnapshotCountIsTheSweeps(t *testing.T) {
	if testcluster.EtcdSnapshotCount != SnapshotCount {
		t.Fatalf("testcluster's members run with --snapshot-count %d, the sweep assumes %d", testcluster.EtcdSnapshotCount, SnapshotCount)
	}
}
