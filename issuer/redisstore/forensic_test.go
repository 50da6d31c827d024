package redisstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

// TestForensicAfterSweep is invariant 5 on the real 3+3 cluster: redeem
// records with secrets (and retry some), let their deadlines pass by the
// store's clock — Redis, going by its wall clock, still holds them — and
// Sweep. No API answers with them, Redis holds none of their keys, and a
// byte search of every node's directory (AOF base and incremental files,
// RDB, nodes.conf) finds none of the record keys, their hashes, the
// secret hashes, the markers, the day's count key, the secrets, the
// attester or the ids. A control search before the sweep
// finds the record keys on two nodes each (master and replica), and in
// the RDB file a restarted replica kept from its full resynchronisation,
// so the search would see them.
func TestForensicAfterSweep(t *testing.T) {
	rc := testcluster.StartRedis(t)
	c := clusterClient(t, rc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(t0)
	s, err := New(c, Options{EpochKeys: newEpochKeys(), Prefix: "forensic:", Clock: clock, WaitReplicas: 1, WaitTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const attester = "lab-forensic-attester"
	day := t0.Truncate(24 * time.Hour)
	var ps []forensic.Pattern
	control := map[string]bool{} // patterns the control search must find
	add := func(what string, b []byte, inControl bool) {
		ps = append(ps, forensic.Pattern{What: what, Bytes: b})
		if inControl {
			control[what] = true
		}
	}
	add("attester", []byte(attester), false)
	const n = 24
	var rks []issuer.ReplayKey
	for i := 0; i < n; i++ {
		secret := make([]byte, secretSize)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		rk := issuer.ReplayKey{Attester: attester, ID: fmt.Sprintf("forensic-id-%03d", i), Deadline: t0.Add(72 * time.Hour),
			Accepted: t0.Add(96 * time.Hour), Secret: secret}
		rks = append(rks, rk)
		r := issuer.Redemption{Replay: []issuer.ReplayKey{rk}, MaxRetries: 1, Colour: policy.Green, Day: day, CountDeadline: t0.Add(2 * time.Hour)}
		if _, err := s.Redeem(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // a retry: the record keeps its first marker as pm
			if res, err := s.Redeem(ctx, r); err != nil || !res.Retried[0] {
				t.Fatalf("retry %d: %+v %v", i, res, err)
			}
		}
		key := recordKeyOf(t, s, rk)
		add(fmt.Sprintf("record key %d", i), []byte(key), true)
		add(fmt.Sprintf("record hash %d", i), []byte(key[strings.LastIndex(key, ":")+1:]), true)
		add(fmt.Sprintf("id %d", i), []byte(rk.ID), false)
		add(fmt.Sprintf("secret %d", i), secret, false)
		vals, err := c.HGetAll(ctx, key).Result()
		if err != nil || len(vals) == 0 {
			t.Fatalf("record %d: %v %v", i, vals, err)
		}
		add(fmt.Sprintf("secret hash %d", i), []byte(vals["s"]), true)
		add(fmt.Sprintf("marker %d", i), []byte(vals["m"]), true)
		if i%2 == 0 {
			add(fmt.Sprintf("first marker %d", i), []byte(vals["pm"]), true)
		}
	}
	add("count key", []byte(s.countKey(day)), true)

	// A replica restarted now resynchronises in full and keeps the RDB
	// file it was sent (repl-diskless-load disabled, Redis's default):
	// one more copy the sweep must replace.
	masters, err := rc.Masters()
	if err != nil {
		t.Fatal(err)
	}
	var replica *testcluster.Node
	for _, node := range rc.Nodes {
		if !slices.Contains(masters, node) {
			replica = node
		}
	}
	if err := replica.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Restart(replica); err != nil {
		t.Fatal(err)
	}
	if err := rc.WaitHealthy(); err != nil {
		t.Fatal(err)
	}

	// Control: what the store wrote is on disk, on two nodes, and in the
	// restarted replica's RDB file.
	found := map[string]int{}
	inRDB := 0
	for _, node := range rc.Nodes {
		for _, h := range forensic.Hits(t, node.Dir, ps) {
			what, file, _ := strings.Cut(h, " in ")
			found[what]++
			if node == replica && file == "dump.rdb" && strings.HasPrefix(what, "record key") {
				inRDB++
			}
		}
	}
	if inRDB == 0 {
		t.Errorf("control: no record key in the restarted replica's dump.rdb")
	}
	for _, p := range ps {
		if control[p.What] && found[p.What] < 2 {
			t.Errorf("control: %s found on %d nodes, want 2 (master and replica)", p.What, found[p.What])
		}
		if !control[p.What] && found[p.What] > 0 {
			t.Errorf("control: %s, never to be written, found on %d nodes", p.What, found[p.What])
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Past every deadline by the store's clock; Redis's clock says the
	// records live two more days.
	now := t0.Add(73 * time.Hour)
	clock.Set(now)
	started := time.Now()
	st, err := s.Sweep(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sweep of %d records on a 3+3 cluster: %s (AOF rewrite and snapshot on 6 nodes)", n, time.Since(started).Round(time.Millisecond))
	if st.Deleted[issuer.CategoryReplay] != n || st.Deleted[issuer.CategoryCounts] != 1 {
		t.Fatalf("Sweep: %+v, want %d records and 1 count deleted", st, n)
	}
	// No API answers with them: the next period's check finds nothing to
	// refuse (even with no secret), and the day's counts are gone.
	for i, rk := range rks {
		next := rk
		next.Deadline, next.Secret = t0.Add(90*time.Hour), nil
		if err := s.Redeemed(ctx, []issuer.ReplayKey{next}, 0); err != nil {
			t.Fatalf("attestation %d after the sweep: %v, want no record", i, err)
		}
		if held, err := c.Exists(ctx, recordKeyOf(t, s, rk)).Result(); err != nil || held != 0 {
			t.Fatalf("attestation %d: its record key is still held (%v)", i, err)
		}
	}
	if m, err := s.Counts(ctx, day); err != nil || len(m) != 0 {
		t.Fatalf("the day's counts after the sweep: %v %v", m, err)
	}
	var left []string
	var files []string
	for _, node := range rc.Nodes {
		for _, h := range forensic.Hits(t, node.Dir, ps) {
			left = append(left, node.Name+": "+h)
		}
		for path := range forensic.Files(t, node.Dir) {
			rel, _ := filepath.Rel(node.Dir, path)
			files = append(files, node.Name+"/"+rel)
		}
	}
	sort.Strings(files)
	t.Logf("files searched: %s", strings.Join(files, ", "))
	if len(left) > 0 {
		sort.Strings(left)
		t.Fatalf("found after the sweep:\n%s", strings.Join(left, "\n"))
	}
	// Each node has its AOF and an RDB file among what was searched.
	for _, node := range rc.Nodes {
		for _, f := range []string{"nodes.conf", "dump.rdb", "appendonlydir"} {
			if _, err := os.Stat(filepath.Join(node.Dir, f)); err != nil {
				t.Errorf("%s: %v", node.Name, err)
			}
		}
	}
}

// TestSweepWithAReplicaDown: a replica killed before the sweep keeps its
// stale files (documented), but the sweep still deletes on the masters
// and rewrites every other node, and fails naming the node.
func TestSweepWithAReplicaDown(t *testing.T) {
	rc := testcluster.StartRedis(t)
	c := clusterClient(t, rc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(t0)
	s, err := New(c, Options{EpochKeys: newEpochKeys(), Prefix: "down:", Clock: clock, WaitReplicas: 1, WaitTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var ps []forensic.Pattern
	const n = 12
	for i := 0; i < n; i++ {
		rk := issuer.ReplayKey{Attester: "lab-1", ID: fmt.Sprint("down-", i), Deadline: t0.Add(2 * time.Hour), Accepted: t0.Add(2 * time.Hour)}
		if _, err := s.Redeem(ctx, issuer.Redemption{Replay: []issuer.ReplayKey{rk}, Colour: policy.Red,
			Day: t0.Truncate(24 * time.Hour), CountDeadline: t0.Add(400 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, forensic.Pattern{What: fmt.Sprint("record key ", i), Bytes: []byte(recordKeyOf(t, s, rk))})
	}
	masters, err := rc.Masters()
	if err != nil {
		t.Fatal(err)
	}
	var down *testcluster.Node
	for _, node := range rc.Nodes {
		if !slices.Contains(masters, node) {
			down = node
		}
	}
	if err := down.Kill(); err != nil {
		t.Fatal(err)
	}
	// Until the cluster deems it failing, a sweep cannot tell it from a
	// node that is slow to answer: wait until every node says so.
	deemedFailing := func(node *testcluster.Node) bool {
		nc := redis.NewClient(&redis.Options{Addr: node.Addr})
		defer nc.Close()
		text, err := nc.ClusterNodes(ctx).Result()
		if err != nil {
			return false
		}
		for _, line := range strings.Split(text, "\n") {
			if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[1], down.Addr+"@") {
				return strings.Contains(","+f[2]+",", ",fail,") || strings.Contains(f[2], "fail?")
			}
		}
		return false
	}
	bound := time.Now().Add(testcluster.ReadyTimeout)
	for _, node := range rc.Nodes {
		for node != down && !deemedFailing(node) {
			if time.Now().After(bound) {
				t.Fatalf("%s does not deem %s failing within %s", node.Name, down.Name, testcluster.ReadyTimeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	st, err := s.Sweep(ctx, t0.Add(2*time.Hour))
	if err == nil || !strings.Contains(err.Error(), down.Addr+" are failing") || st.Compacted {
		t.Fatalf("Sweep with %s down: %v, compacted %v; want an error naming it, not compacted", down.Name, err, st.Compacted)
	}
	if st.Deleted[issuer.CategoryReplay] != n {
		t.Fatalf("Sweep deleted %d records, want %d", st.Deleted[issuer.CategoryReplay], n)
	}
	for _, node := range rc.Nodes {
		if node == down {
			continue
		}
		if hits := forensic.Hits(t, node.Dir, ps); len(hits) > 0 {
			t.Errorf("%s after the sweep: %s", node.Name, strings.Join(hits, ", "))
		}
	}
}
