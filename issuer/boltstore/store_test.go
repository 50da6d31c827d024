package boltstore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/preload"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

// t0 is the tests' "now": a Tuesday mid-morning, UTC.
var t0 = time.Date(2031, 3, 4, 10, 17, 0, 0, time.UTC)

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
	c.t = t
	c.mu.Unlock()
}

func openTest(t testing.TB, dir string, clock issuer.Clock) *DB {
	t.Helper()
	if clock == nil {
		clock = &fakeClock{t: t0}
	}
	s, err := Open(dir, Options{KEK: testKEK, Clock: clock, MaxBatchDelay: time.Millisecond, SweepChunk: testChunk})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testChunk keeps multi-chunk sweeps small in tests (crash helper included).
const testChunk = 1000

func day(t time.Time) time.Time { return t.UTC().Truncate(24 * time.Hour) }

// redemption redeems the given ids from one attester, all with deadline d.
func redemption(attester string, d time.Time, ids ...string) issuer.Redemption {
	r := issuer.Redemption{Colour: policy.Green, Day: day(t0), CountDeadline: t0.Add(30 * 24 * time.Hour)}
	for _, id := range ids {
		r.Replay = append(r.Replay, issuer.ReplayKey{Attester: attester, ID: id, Deadline: d})
	}
	return r
}

func wantRedeemed(t *testing.T, err error, index int) {
	t.Helper()
	var re *issuer.RedeemedError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want *issuer.RedeemedError", err)
	}
	if re.Index != index {
		t.Fatalf("RedeemedError.Index = %d, want %d", re.Index, index)
	}
}

func bucketLen(t *testing.T, s *DB, name string) int {
	t.Helper()
	n := 0
	if err := s.view(context.Background(), func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte(name)).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := openTest(t, dir, nil)
	ctx := context.Background()
	if err := errOf(s.Redeem(ctx, redemption("lab", t0.Add(time.Hour), "a"))); err != nil {
		t.Fatal(err)
	}
	end := s.epochOf(t0.Unix() + 3600)
	for path, want := range map[string]os.FileMode{
		dir:                                 os.ModeDir | 0o700,
		filepath.Join(dir, "healthcode.db"): 0o600,
		filepath.Join(dir, "lock"):          0o600,
		filepath.Join(dir, "replay"):        os.ModeDir | 0o700,
		s.partitionPath(end, ".db"):         0o600,
		s.partitionPath(end, ".key"):        0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{KEK: testKEK, MaxBatchSize: -1}, "boltstore: MaxBatchSize must not be negative, got -1"},
		{Options{KEK: testKEK, MaxBatchDelay: -time.Millisecond}, "boltstore: MaxBatchDelay must not be negative, got -1ms"},
		{Options{KEK: testKEK, SweepChunk: -2}, "boltstore: SweepChunk must not be negative, got -2"},
		{Options{KEK: testKEK, Epoch: 1500 * time.Millisecond}, "boltstore: Epoch must be a positive whole number of seconds, got 1.5s"},
		{Options{KEK: testKEK, Epoch: -time.Hour}, "boltstore: Epoch must be a positive whole number of seconds, got -1h0m0s"},
	} {
		_, err := Open(dir, tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Open(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
	if _, err := Open("", Options{KEK: testKEK}); err == nil || err.Error() != "boltstore: data directory must not be empty" {
		t.Errorf("Open(\"\") = %v", err)
	}
}

func TestOpenKeepsEpochLength(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{KEK: testKEK, Epoch: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(dir, Options{KEK: testKEK, Epoch: 2 * time.Hour})
	if want := "boltstore: prepare buckets: boltstore: Epoch 2h0m0s differs from the 1h0m0s this store was created with"; err == nil || err.Error() != want {
		t.Fatalf("reopen with another epoch: %v, want %q", err, want)
	}
	s, err = Open(dir, Options{KEK: testKEK})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.epoch != 3600 {
		t.Fatalf("epoch = %d, want the stored 3600", s.epoch)
	}
}

func TestOpenRemovesStaleCompactionFile(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	s.Close()
	stale := filepath.Join(dir, "healthcode.db.compact")
	if err := os.WriteFile(stale, []byte("half a compaction"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmpKey := filepath.Join(dir, "replay", ".1796428800.key.tmp-123")
	if err := os.WriteFile(tmpKey, []byte("half a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir, nil)
	for _, p := range []string{stale, tmpKey} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Open: %v", p, err)
		}
	}
}

func TestRedeemRejectsBadInput(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	d := t0.Add(time.Hour)
	for _, tc := range []struct {
		name string
		mod  func(*issuer.Redemption)
		want string
	}{
		{"no keys", func(r *issuer.Redemption) { r.Replay = nil }, "boltstore: redeem: no attestations to record"},
		{"bad colour", func(r *issuer.Redemption) { r.Colour = 9 }, "boltstore: redeem: colour 9 is not a known colour"},
		{"day not midnight", func(r *issuer.Redemption) { r.Day = t0 }, "boltstore: redeem: day must be a UTC midnight, got 2031-03-04T10:17:00Z"},
		{"no count deadline", func(r *issuer.Redemption) { r.CountDeadline = time.Time{} }, "boltstore: aggregate count: deadline is required"},
		{"no replay deadline", func(r *issuer.Redemption) { r.Replay[0].Deadline = time.Time{} }, "boltstore: attestation 0: deadline is required"},
		{"deadline before 1970", func(r *issuer.Redemption) { r.Replay[0].Deadline = time.Unix(-5, 0) }, "boltstore: attestation 0: deadline 1969-12-31T23:59:55Z is not after 1970"},
		{"no id", func(r *issuer.Redemption) { r.Replay[0].ID = "" }, "boltstore: redeem: attestation 0: attester and id are required"},
		{"no attester", func(r *issuer.Redemption) { r.Replay[0].Attester = "" }, "boltstore: redeem: attestation 0: attester and id are required"},
		{"NUL attester", func(r *issuer.Redemption) { r.Replay[0].Attester = "a\x00b" }, "boltstore: redeem: attestation 0: attester contains a NUL byte"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := redemption("lab", d, "id")
			tc.mod(&r)
			err := errOf(s.Redeem(ctx, r))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if n := replayCount(t, s) + bucketLen(t, s, issuer.CategoryCounts); n != 0 {
		t.Fatalf("%d records written by refused requests", n)
	}
}

func TestRedeemCountsPerDayAndColour(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	d := t0.Add(time.Hour)
	for i, c := range []policy.Colour{policy.Green, policy.Green, policy.Red, policy.Green} {
		r := redemption("lab", d, fmt.Sprint("id-", i))
		r.Colour = c
		if err := errOf(s.Redeem(ctx, r)); err != nil {
			t.Fatal(err)
		}
	}
	// A refused redemption does not count.
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d, "id-0"))), 0)
	got := map[byte]uint64{}
	s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(issuer.CategoryCounts)).ForEach(func(k, v []byte) error {
			if len(k) != 17 || len(v) != 16 {
				t.Fatalf("count key %d bytes, value %d bytes", len(k), len(v))
			}
			got[k[16]] = uint64(v[15]) // small counts fit one byte
			return nil
		})
	})
	if got[byte(policy.Green)] != 3 || got[byte(policy.Red)] != 1 || len(got) != 2 {
		t.Fatalf("counts = %v, want green 3, red 1", got)
	}
}

// A record is read back from disk after a reopen (the epoch keys too):
// found with its own deadline and with one in another epoch.
func TestRedeemSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d := t0.Add(time.Hour)
	s := openTest(t, dir, nil)
	if err := errOf(s.Redeem(ctx, redemption("lab", d, "kept"))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, nil)
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d, "kept"))), 0)
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d.Add(50*time.Hour), "kept"))), 0)
}

// The sweep of the categories bbolt holds besides the state suite's
// (storetest.RunState covers audit, signing keys and policy history):
// aggregate counts go at their deadline, with a compaction; replay records
// wait for their partition's end, but no longer count after their own
// deadline; a partition dropped whole needs no compaction.
func TestSweepCountsAndReplayPartitions(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	soon, later := t0.Add(2*time.Hour), t0.Add(96*time.Hour)
	soonEnd := time.Unix(s.epochOf(soon.Unix()), 0)
	if err := errOf(s.Redeem(ctx, redemption("lab", soon, "s1", "s2"))); err != nil {
		t.Fatal(err)
	}
	if err := errOf(s.Redeem(ctx, redemption("lab", later, "l1"))); err != nil {
		t.Fatal(err)
	}
	r := redemption("lab", later, "l2")
	r.CountDeadline = soon
	if err := errOf(s.Redeem(ctx, r)); err != nil {
		t.Fatal(err)
	}

	// Just before the deadline nothing goes.
	st, err := s.Sweep(ctx, soon.Add(-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if st.Compacted || sum(st.Deleted) != 0 {
		t.Fatalf("early sweep: %+v", st)
	}
	// At the deadline the count goes and the main file is compacted; the
	// replay records wait for their partition's end, but no longer count:
	// s1 redeems again.
	clock.Set(soon)
	st, err = s.Sweep(ctx, soon)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		issuer.CategoryReplay: 0, issuer.CategoryCounts: 1, issuer.CategoryAudit: 0,
		issuer.CategorySigningKeys: 0, issuer.CategoryPolicyHistory: 0,
	}
	if fmt.Sprint(st.Deleted) != fmt.Sprint(want) || !st.Compacted {
		t.Fatalf("sweep = %+v, want deleted %v and compacted", st, want)
	}
	if n := bucketLen(t, s, issuer.CategoryCounts); n != 1 {
		t.Fatalf("%d aggregate counts left, want 1", n)
	}
	if err := errOf(s.Redeem(ctx, redemption("lab", soon.Add(time.Hour), "s1"))); err != nil {
		t.Fatalf("s1 after its deadline: %v", err)
	}
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", later, "l1"))), 0)
	// At the partition's end the whole partition goes (s1 replaced its
	// own expired record there: two records), with nothing to compact.
	clock.Set(soonEnd)
	st, err = s.Sweep(ctx, soonEnd)
	if err != nil {
		t.Fatal(err)
	}
	if st.Compacted || st.Deleted[issuer.CategoryReplay] != 2 || sum(st.Deleted) != 2 {
		t.Fatalf("partition sweep: %+v", st)
	}
	if _, err := os.Stat(s.partitionPath(soonEnd.Unix(), ".db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dropped partition file still there: %v", err)
	}
	st, err = s.Sweep(ctx, soonEnd)
	if err != nil {
		t.Fatal(err)
	}
	if st.Compacted || sum(st.Deleted) != 0 {
		t.Fatalf("third sweep: %+v", st)
	}
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", later, "l1"))), 0)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func putKey(t testing.TB, s *DB, id string, destroy time.Time) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := issuer.SigningKey{ID: id, Private: priv, Created: t0, NotBefore: t0, NotAfter: destroy.Add(-time.Hour), DestroyAt: destroy}
	if err := s.PutSigningKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return priv
}

func putPolicy(t testing.TB, s *DB, version int, historyDeadline time.Time) {
	t.Helper()
	rec := issuer.PolicyRecord{Version: version, Raw: fmt.Appendf(nil, `{"version":%d}`, version), Set: t0.Add(time.Duration(version) * time.Minute)}
	if err := s.PutPolicy(context.Background(), rec, historyDeadline); err != nil {
		t.Fatal(err)
	}
}

func TestSweepInBoundedTransactions(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	n := 2*s.opts.SweepChunk + 123
	for i := range n {
		if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: fmt.Sprint("a", i)}, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for range 7 {
		if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "kept"}, t0.Add(48*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	chunks := 0
	testHook = func(stage string) {
		if stage == "deleted-chunk" {
			chunks++
		}
	}
	t.Cleanup(func() { testHook = nil })
	st, err := s.Sweep(ctx, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Deleted[issuer.CategoryAudit]; got != n || !st.Compacted {
		t.Fatalf("deleted %d, compacted %v; want %d, true", got, st.Compacted, n)
	}
	if chunks != 3 {
		t.Fatalf("deleted in %d transactions, want 3 of at most %d", chunks, s.opts.SweepChunk)
	}
	if got := bucketLen(t, s, issuer.CategoryAudit); got != 7 {
		t.Fatalf("%d audit entries left, want 7", got)
	}
}

// bulkReplay writes n replay records with random keys directly, in large
// transactions, as the benchmarks do.
func bulkReplay(t testing.TB, s *DB, n int, deadline time.Time) {
	t.Helper()
	prefix := fmt.Sprintf("bulk-%d-", deadline.Unix())
	if err := preload.Replay(context.Background(), s, s.clock.Now(), n, 0, "bulk-lab", prefix, func(int) time.Time { return deadline }); err != nil {
		t.Fatal(err)
	}
}

func TestSweepConcurrentWithRedeem(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := openTest(t, t.TempDir(), clock)
	ctx := context.Background()
	// Partitions that fall due while redemptions run: one per day epoch.
	const dueEpochs, perEpoch = 6, 500
	for e := range dueEpochs {
		bulkReplay(t, s, perEpoch, t0.Add(time.Duration(e+1)*24*time.Hour))
	}
	clock.Set(t0.Add((dueEpochs + 1) * 24 * time.Hour))
	now := clock.Now()
	var wg sync.WaitGroup
	const writers, each = 8, 40
	live := now.Add(240 * time.Hour)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := errOf(s.Redeem(ctx, redemption("lab", live, fmt.Sprintf("live-%d-%d", w, i)))); err != nil {
					t.Error(err)
					return
				}
				// An audit entry due at once, so every sweep compacts.
				if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: now, Admin: "ops", Action: "x"}, now); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	compactions, deleted := 0, 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		st, err := s.Sweep(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		deleted += st.Deleted[issuer.CategoryReplay]
		if st.Compacted {
			compactions++
		}
	}
	if compactions == 0 {
		t.Fatal("no sweep compacted while redemptions ran")
	}
	if deleted != dueEpochs*perEpoch {
		t.Fatalf("swept %d due records, want %d", deleted, dueEpochs*perEpoch)
	}
	for w := range writers {
		for i := range each {
			wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", live, fmt.Sprintf("live-%d-%d", w, i)))), 0)
		}
	}
}

func TestSweepDropsEndedPartitions(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := openTest(t, t.TempDir(), clock)
	ctx := context.Background()
	soon, later := t0.Add(time.Hour), t0.Add(72*time.Hour)
	if err := errOf(s.Redeem(ctx, redemption("lab", soon, "a"))); err != nil {
		t.Fatal(err)
	}
	if err := errOf(s.Redeem(ctx, redemption("lab", later, "b"))); err != nil {
		t.Fatal(err)
	}
	endSoon, endLater := s.epochOf(soon.Unix()), s.epochOf(later.Unix())
	if endSoon != day(t0).Add(24*time.Hour).Unix() {
		t.Fatalf("epoch of %v ends %v, want the next midnight", soon, time.Unix(endSoon, 0).UTC())
	}
	// Past the record's deadline but not its epoch's end: the partition stays.
	if _, err := s.Sweep(ctx, soon); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".db", ".key"} {
		if _, err := os.Stat(s.partitionPath(endSoon, ext)); err != nil {
			t.Fatalf("partition %s gone before its epoch ended: %v", ext, err)
		}
	}
	st, err := s.Sweep(ctx, time.Unix(endSoon, 0))
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted[issuer.CategoryReplay] != 1 {
		t.Fatalf("sweep %+v, want one replay record dropped", st)
	}
	for _, ext := range []string{".db", ".key"} {
		if _, err := os.Stat(s.partitionPath(endSoon, ext)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("ended partition %s still on disk: %v", ext, err)
		}
		if _, err := os.Stat(s.partitionPath(endLater, ext)); err != nil {
			t.Fatalf("live partition %s gone: %v", ext, err)
		}
	}
	if len(s.partitions()) != 1 {
		t.Fatalf("%d partitions held, want 1", len(s.partitions()))
	}
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", later, "b"))), 0)
	// A sweep ran ahead of the store's clock: the dropped epoch is never
	// made again under the same file names (its drop may still be going).
	err = errOf(s.Redeem(ctx, redemption("lab", soon.Add(time.Hour), "c", "d")))
	if want := fmt.Sprintf("boltstore: replay partition %d has already been dropped", endSoon); err == nil || err.Error() != want {
		t.Fatalf("redeem into a dropped epoch: %v, want %q", err, want)
	}
	if n := replayCount(t, s); n != 1 {
		t.Fatalf("%d replay records after a refused redemption, want 1", n)
	}
}

func TestInventory(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := openTest(t, t.TempDir(), clock)
	ctx := context.Background()
	inv, err := s.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range inv[:5] {
		if c.Count != 0 || c.Oldest != nil || c.NextDeadline != nil {
			t.Fatalf("empty store: %+v", c)
		}
	}
	d1, d2 := t0.Add(5*time.Hour), t0.Add(50*time.Hour)
	if err := errOf(s.Redeem(ctx, redemption("lab", d2, "a", "b"))); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(3 * time.Hour))
	if err := errOf(s.Redeem(ctx, redemption("lab", d1, "c"))); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAttester(ctx, issuer.Attester{ID: "lab", Public: make(ed25519.PublicKey, 32), Added: t0}); err != nil {
		t.Fatal(err)
	}
	inv, err = s.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{issuer.CategoryReplay, issuer.CategoryCounts, issuer.CategoryAudit,
		issuer.CategorySigningKeys, issuer.CategoryPolicyHistory, issuer.CategoryConfiguration}
	if len(inv) != len(names) {
		t.Fatalf("%d rows, want %d", len(inv), len(names))
	}
	for i, c := range inv {
		if c.Name != names[i] {
			t.Fatalf("row %d is %q, want %q", i, c.Name, names[i])
		}
	}
	hour0 := t0.Truncate(time.Hour)
	r := inv[0]
	// Replay records go when their partition ends.
	if end := time.Unix(s.epochOf(d1.Unix()), 0); r.Count != 3 || !r.Oldest.Equal(hour0) || !r.NextDeadline.Equal(end) {
		t.Fatalf("replay row %+v: want 3, oldest %v, next %v", r, hour0, end)
	}
	if c := inv[1]; c.Count != 1 || !c.Oldest.Equal(hour0) {
		t.Fatalf("counts row %+v (one day, one colour, first written at %v)", c, hour0)
	}
	// epoch length, the KEK check and the attester.
	if c := inv[5]; c.Count != 3 || c.NextDeadline != nil {
		t.Fatalf("configuration row %+v", c)
	}
}

// The state is read back from disk after a reopen: the signing keys (a
// moved one without its stale copy), the bundle key, and the bundle
// sequence, which goes on from where it stood (1, 2, 3, then 4).
func TestStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	priv := putKey(t, s, "k1", t0.Add(48*time.Hour))
	putKey(t, s, "k0", t0.Add(24*time.Hour))
	k1 := issuer.SigningKey{ID: "k1", Private: priv, Created: t0, ActiveAt: t0.Add(2 * time.Hour), NotBefore: t0.Add(time.Hour), NotAfter: t0.Add(47 * time.Hour), DestroyAt: t0.Add(96 * time.Hour)}
	if err := s.PutSigningKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	_, bk, _ := ed25519.GenerateKey(rand.Reader)
	if err := s.PutBundleKey(ctx, bk); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 3; want++ {
		got, err := s.NextBundleSequence(ctx)
		if err != nil || got != want {
			t.Fatalf("NextBundleSequence = %d, %v; want %d", got, err, want)
		}
	}
	s.Close()
	s = openTest(t, dir, nil)
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != "k0" || keys[1].ID != "k1" {
		t.Fatalf("keys = %v", keys)
	}
	got := keys[1]
	if !got.Private.Equal(priv) || !got.DestroyAt.Equal(k1.DestroyAt) || !got.NotBefore.Equal(k1.NotBefore) || !got.ActiveAt.Equal(k1.ActiveAt) {
		t.Fatalf("k1 after reopen: %s", got.ID)
	}
	if n := bucketLen(t, s, issuer.CategorySigningKeys); n != 2 {
		t.Fatalf("%d signing-key records, want 2 (no stale copy of k1)", n)
	}
	if b, err := s.BundleKey(ctx); err != nil || !b.Equal(bk) {
		t.Fatalf("BundleKey after reopen: %v", err)
	}
	if n, err := s.NextBundleSequence(ctx); err != nil || n != 4 {
		t.Fatalf("sequence after reopen = %d, %v; want 4", n, err)
	}
}

// bbolt's own texts for refused state input (storetest.RunState checks
// that each is refused and writes nothing).
func TestStateErrorTexts(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub := priv.Public().(ed25519.PublicKey)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{s.PutSigningKey(ctx, issuer.SigningKey{Private: priv, DestroyAt: t0}), "boltstore: signing key: id is required"},
		{s.PutSigningKey(ctx, issuer.SigningKey{ID: "x", Private: priv[:10], DestroyAt: t0}), `boltstore: signing key "x": private key is 10 bytes, want 64`},
		{s.PutSigningKey(ctx, issuer.SigningKey{ID: "x", Private: priv}), "boltstore: signing key x: deadline is required"},
		{s.PutSigningKey(ctx, issuer.SigningKey{ID: "x", Private: priv, DestroyAt: time.Unix(-5, 0)}), "boltstore: signing key x: deadline 1969-12-31T23:59:55Z is not after 1970"},
		{s.WithdrawSigningKey(ctx, issuer.WithdrawnKey{Until: t0}), "boltstore: withdrawn key: id is required"},
		{s.WithdrawSigningKey(ctx, issuer.WithdrawnKey{ID: "x"}), "boltstore: withdrawn key x: deadline is required"},
		{s.PutBundleKey(ctx, priv[:5]), "boltstore: bundle key is 5 bytes, want 64"},
		{s.PutAttester(ctx, issuer.Attester{Public: pub}), "boltstore: attester: id is required"},
		{s.PutAttester(ctx, issuer.Attester{ID: "x", Public: pub[:3]}), `boltstore: attester "x": public key is 3 bytes, want 32`},
		{s.PutAdminToken(ctx, issuer.AdminToken{Hash: sha256.Sum256([]byte("t"))}), "boltstore: admin token: name is required"},
		{s.PutAdminToken(ctx, issuer.AdminToken{Name: "zero"}), `boltstore: admin token "zero": hash is all zeros`},
		{s.PutPolicy(ctx, issuer.PolicyRecord{Version: 0, Raw: []byte("{}")}, t0), "boltstore: policy: version must be at least 1, got 0"},
		{s.PutPolicy(ctx, issuer.PolicyRecord{Version: 3}, t0), "boltstore: policy: document is empty"},
		{s.PutPolicy(ctx, issuer.PolicyRecord{Version: 3, Raw: []byte("{}")}, time.Time{}), "boltstore: policy history: deadline is required"},
		{s.AppendAudit(ctx, issuer.AuditEntry{Action: "x"}, t0), "boltstore: audit: time is required"},
		{s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Action: "x"}, time.Time{}), "boltstore: audit entry: deadline is required"},
		{s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Action: " "}, t0), "boltstore: audit: action is required"},
		{errOf2(s.Sweep(ctx, time.Time{})), "boltstore: sweep: now is required"},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("got %v, want %q", tc.err, tc.want)
		}
	}
}

func errOf2(_ issuer.SweepStats, err error) error { return err }

// PolicyHistory, bbolt's own reading of the replaced policies (the
// suite sees them through the inventory): each keeps its version and
// time set.
func TestPolicyHistory(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	putPolicy(t, s, 1, t0.Add(time.Hour))
	if h, _ := s.PolicyHistory(ctx); len(h) != 0 {
		t.Fatalf("history after the first policy: %v", h)
	}
	putPolicy(t, s, 2, t0.Add(time.Hour))
	putPolicy(t, s, 3, t0.Add(time.Hour))
	h, err := s.PolicyHistory(ctx)
	if err != nil || len(h) != 2 || h[0].Version != 1 || !h[0].Set.Equal(t0.Add(time.Minute)) ||
		h[1].Version != 2 || string(h[1].Raw) != `{"version":2}` {
		t.Fatalf("history = %+v, %v", h, err)
	}
}

func TestClosed(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := errOf(s.Redeem(ctx, redemption("lab", t0.Add(time.Hour), "a"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Redeem after Close: %v", err)
	}
	if _, err := s.Sweep(ctx, t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sweep after Close: %v", err)
	}
	if _, err := s.Inventory(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Inventory after Close: %v", err)
	}
}

// errOf keeps the error of a Redeem for tests that need only that.
func errOf(_ issuer.RedeemResult, err error) error { return err }
