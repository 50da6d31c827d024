package etcdstore_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
)

// TestStore runs the etcd-particular cases on one real 3-member cluster.
func TestStore(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	t.Run("SealedAtRest", func(t *testing.T) { testSealedAtRest(t, c, cli) })
	t.Run("WrongKEKRefused", func(t *testing.T) { testWrongKEK(t, c, cli) })
	t.Run("OptionsRefused", func(t *testing.T) { testOptionsRefused(t, c, cli) })
	t.Run("OneBundleKey", func(t *testing.T) { testOneBundleKey(t, c, cli) })
	t.Run("BundleKeyReplacedOnlyAsSeen", func(t *testing.T) { testBundleKeyReplacedOnlyAsSeen(t, c, cli) })
	t.Run("SequenceAcrossStores", func(t *testing.T) { testSequenceAcrossStores(t, c, cli) })
	t.Run("PolicyNeverRolledBack", func(t *testing.T) { testPolicyNeverRolledBack(t, c, cli) })
	t.Run("DeadlineLeases", func(t *testing.T) { testDeadlineLeases(t, c, cli) })
	t.Run("SweepCompacts", func(t *testing.T) { testSweepCompacts(t, c, cli) })
	t.Run("DeleteAbsent", func(t *testing.T) { testDeleteAbsent(t, c, cli) })
	t.Run("InventoryOfAFreshStore", func(t *testing.T) { testInventoryFresh(t, c, cli) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, c, cli) })
}

// raw returns every value stored under prefix, as etcd holds it.
func raw(t *testing.T, cli *clientv3.Client, prefix string) map[string][]byte {
	t.Helper()
	resp, err := cli.Get(testCtx(t), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// readable reports the forms in which secret could be read in v: as it
// is, or its seed as raw bytes, base64 or hex.
func readable(v []byte, secret ed25519.PrivateKey) bool {
	seed := secret.Seed()
	for _, form := range [][]byte{
		secret, seed,
		[]byte(base64.StdEncoding.EncodeToString(secret)), []byte(base64.StdEncoding.EncodeToString(seed)[:40]),
		[]byte(base64.RawURLEncoding.EncodeToString(seed)[:40]), []byte(hex.EncodeToString(seed)),
	} {
		if bytes.Contains(v, form) {
			return true
		}
	}
	return false
}

func testSealedAtRest(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	clk := newClock()
	s := c.open(t, cli, p, clk)
	_, signing, _ := ed25519.GenerateKey(rand.Reader)
	_, bundle, _ := ed25519.GenerateKey(rand.Reader)
	now := clk.Now()
	k := issuer.SigningKey{ID: "k1", Private: signing, Created: now, ActiveAt: now, NotBefore: now,
		NotAfter: now.Add(48 * time.Hour), DestroyAt: now.Add(96 * time.Hour)}
	if err := s.PutSigningKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBundleKey(ctx, bundle); err != nil {
		t.Fatal(err)
	}
	vals := raw(t, cli, p)
	if len(vals) < 3 {
		t.Fatalf("only %d values under %s", len(vals), p)
	}
	for key, v := range vals {
		if readable(v, signing) || readable(v, bundle) {
			t.Fatalf("%s holds a private key readable without the KEK", key)
		}
	}
	// And they open with it.
	keys, err := s.SigningKeys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Private.Equal(signing) {
		t.Fatalf("SigningKeys: %v, %v", keys, err)
	}
	if got, err := s.BundleKey(ctx); err != nil || !got.Equal(bundle) {
		t.Fatalf("BundleKey: %v", err)
	}
	// A sealed blob moved to another record does not open there.
	var sigKey, bkKey string
	for key := range vals {
		switch {
		case bytes.Contains([]byte(key), []byte("/keys/")):
			sigKey = key
		case bytes.HasSuffix([]byte(key), []byte("config/bundle_key")):
			bkKey = key
		}
	}
	var sealed struct {
		Sealed []byte `json:"sealed"`
	}
	mustJSON(t, vals[sigKey], &sealed)
	moved := []byte(`{"w":1,"sealed":"` + base64.StdEncoding.EncodeToString(sealed.Sealed) + `"}`)
	if _, err := cli.Put(ctx, bkKey, string(moved)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BundleKey(ctx); !errors.Is(err, kek.ErrCorrupt) {
		t.Fatalf("BundleKey holding a signing key's blob: got %v, want kek.ErrCorrupt", err)
	}
}

func testWrongKEK(t *testing.T, c *cluster, cli *clientv3.Client) {
	p := c.newPrefix()
	c.open(t, cli, p, newClock())
	other, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	_, err = etcdstore.New(testCtx(t), cli, etcdstore.Options{Prefix: p, KEK: other})
	if !errors.Is(err, kek.ErrWrongKEK) {
		t.Fatalf("New with another KEK: got %v, want kek.ErrWrongKEK", err)
	}
	// The first KEK still opens it.
	c.open(t, cli, p, newClock())
}

func testOptionsRefused(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		o    etcdstore.Options
		want string
	}{
		{etcdstore.Options{Prefix: "/x/"}, "etcdstore: a KEK is required (it seals the signing keys, the bundle key and epoch keys)"},
		{etcdstore.Options{Prefix: "/x", KEK: c.kek}, `etcdstore: prefix "/x" must end with "/" (else another prefix's keys fall under it)`},
		{etcdstore.Options{Prefix: "/x/", KEK: c.kek, OpTimeout: -time.Second}, "etcdstore: operation timeout must not be negative, got -1s"},
	} {
		if _, err := etcdstore.New(ctx, cli, tc.o); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v): got %v, want %q", tc.o, err, tc.want)
		}
	}
	if _, err := etcdstore.New(ctx, nil, etcdstore.Options{KEK: c.kek}); err == nil || err.Error() != "etcdstore: an etcd client is required" {
		t.Errorf("New without a client: %v", err)
	}
}

// Two replicas starting together, each on its own client, end with one
// bundle key: one PutBundleKey wins, the other is told a key exists and
// reads the winner's.
func testOneBundleKey(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	stores := []*etcdstore.Store{c.open(t, cli, p, newClock()), c.open(t, c.client(t), p, newClock())}
	for round := 0; round < 5; round++ {
		if round > 0 {
			p = c.newPrefix()
			stores = []*etcdstore.Store{c.open(t, cli, p, newClock()), c.open(t, c.client(t), p, newClock())}
		}
		keys := make([]ed25519.PrivateKey, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range stores {
			_, keys[i], _ = ed25519.GenerateKey(rand.Reader)
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = stores[i].PutBundleKey(ctx, keys[i])
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both PutBundleKey calls stored a key", round)
				}
				winner = i
			case errors.Is(err, etcdstore.ErrBundleKeyExists) && errors.Is(err, issuer.ErrStale):
			default:
				t.Fatalf("round %d: PutBundleKey %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no PutBundleKey stored a key: %v", round, errs)
		}
		for i, s := range stores {
			got, err := s.BundleKey(ctx)
			if err != nil || !got.Equal(keys[winner]) {
				t.Fatalf("round %d: store %d reads another bundle key than the winner's (%v)", round, i, err)
			}
		}
	}
}

// A store replaces only the bundle key it last read or wrote: never one
// another replica stored meanwhile.
func testBundleKeyReplacedOnlyAsSeen(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	a, b := c.open(t, cli, p, newClock()), c.open(t, c.client(t), p, newClock())
	k := make([]ed25519.PrivateKey, 4)
	for i := range k {
		_, k[i], _ = ed25519.GenerateKey(rand.Reader)
	}
	want := func(name string, s *etcdstore.Store, key ed25519.PrivateKey) {
		t.Helper()
		if got, err := s.BundleKey(ctx); err != nil || !got.Equal(key) {
			t.Fatalf("%s: BundleKey is not the one expected (%v)", name, err)
		}
	}
	if err := a.PutBundleKey(ctx, k[0]); err != nil {
		t.Fatal(err)
	}
	if err := b.PutBundleKey(ctx, k[1]); !errors.Is(err, etcdstore.ErrBundleKeyExists) {
		t.Fatalf("b replacing a key it never read: got %v, want ErrBundleKeyExists", err)
	}
	want("after b's refused put", a, k[0])
	want("b reads", b, k[0])
	if err := b.PutBundleKey(ctx, k[2]); err != nil {
		t.Fatalf("b replacing the key it read: %v", err)
	}
	if err := a.PutBundleKey(ctx, k[3]); !errors.Is(err, etcdstore.ErrBundleKeyExists) {
		t.Fatalf("a replacing its own key, since replaced by b: got %v, want ErrBundleKeyExists", err)
	}
	want("after a's refused put", a, k[2])
}

// Bundle sequences handed out by two stores on two clients at once are
// distinct, and each store's own are strictly increasing.
// A replica whose schedule lock lapsed under it, writing the version it
// checked against a policy it read before another replica's newer one,
// is refused: the newer one stays current, and nothing goes to history.
func testPolicyNeverRolledBack(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	clk := newClock()
	ahead, stalled := c.open(t, cli, p, clk), c.open(t, c.client(t), p, clk)
	put := func(s *etcdstore.Store, version int) error {
		return s.PutPolicy(ctx, issuer.PolicyRecord{Version: version, Raw: fmt.Appendf(nil, `{"version":%d}`, version), Set: clk.Now()},
			clk.Now().Add(24*time.Hour))
	}
	if err := put(ahead, 1); err != nil {
		t.Fatal(err)
	}
	if err := put(ahead, 3); err != nil {
		t.Fatal(err)
	}
	for _, version := range []int{2, 3} {
		if err := put(stalled, version); !errors.Is(err, etcdstore.ErrPolicyRollback) {
			t.Fatalf("version %d over version 3: %v, want ErrPolicyRollback", version, err)
		}
	}
	if rec, err := stalled.Policy(ctx); err != nil || rec.Version != 3 {
		t.Fatalf("current policy: version %d, %v; want 3", rec.Version, err)
	}
	if hist, err := stalled.PolicyHistory(ctx); err != nil || len(hist) != 1 || hist[0].Version != 1 {
		t.Fatalf("policy history %+v, %v; want version 1 alone", hist, err)
	}
	if err := put(stalled, 4); err != nil {
		t.Fatalf("version 4 over version 3: %v", err)
	}
}

func testSequenceAcrossStores(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	stores := []*etcdstore.Store{c.open(t, cli, p, newClock()), c.open(t, c.client(t), p, newClock())}
	const each = 20
	got := make([][]uint64, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < each; n++ {
				seq, err := s.NextBundleSequence(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				got[i] = append(got[i], seq)
			}
		}()
	}
	wg.Wait()
	var all []uint64
	for i := range stores {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for n := 1; n < len(got[i]); n++ {
			if got[i][n] <= got[i][n-1] {
				t.Fatalf("store %d: %d after %d", i, got[i][n], got[i][n-1])
			}
		}
		all = append(all, got[i]...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	for n := range all {
		if all[n] != uint64(n+1) {
			t.Fatalf("sequences handed out: %v, want 1..%d each once", all, 2*each)
		}
	}
}

// Records with a deadline carry a lease that ends in the hour after it,
// one lease per hour for every record and store; etcd deletes them when
// it ends (here: revoked) without a sweep, and a store whose cached lease
// is gone takes a new one.
func testDeadlineLeases(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	clk := newClock()
	a := c.open(t, cli, p, clk)
	b := c.open(t, c.client(t), p, clk)
	t0 := clk.Now()
	deadline := t0.Add(50*time.Hour + 10*time.Minute)
	for i, s := range []*etcdstore.Store{a, b, a} {
		e := issuer.AuditEntry{Time: t0.Add(time.Duration(i) * time.Minute), Admin: "ops", Action: "policy.set", Detail: "v2"}
		if err := s.AppendAudit(ctx, e, deadline.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.PutPolicy(ctx, issuer.PolicyRecord{Version: 1, Raw: []byte(`{"v":1}`), Set: t0}, deadline); err != nil {
		t.Fatal(err)
	}
	if err := b.PutPolicy(ctx, issuer.PolicyRecord{Version: 2, Raw: []byte(`{"v":2}`), Set: t0}, deadline); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	leases := map[clientv3.LeaseID][]string{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		deadlined := bytes.HasPrefix(kv.Key, []byte(p+"audit/")) || bytes.HasPrefix(kv.Key, []byte(p+"policy_history/"))
		if deadlined != (kv.Lease != 0) && !bytes.HasPrefix(kv.Key, []byte(p+"leases/")) {
			t.Fatalf("%s: lease %x; want one exactly on records with a deadline", k, kv.Lease)
		}
		if kv.Lease != 0 && deadlined {
			leases[clientv3.LeaseID(kv.Lease)] = append(leases[clientv3.LeaseID(kv.Lease)], k)
		}
	}
	if len(leases) != 1 {
		t.Fatalf("records of one deadline hour on %d leases, want 1: %v", len(leases), leases)
	}
	var id clientv3.LeaseID
	for l, ks := range leases {
		id = l
		if len(ks) != 4 {
			t.Fatalf("lease holds %d records, want 4 (3 audit, 1 policy history): %v", len(ks), ks)
		}
	}
	ttl, err := cli.TimeToLive(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// It ends at the close of the deadline's hour: after the deadline, by
	// under an hour (counted on the store clock, which may lag the wall's).
	end := deadline.Truncate(time.Hour).Add(time.Hour)
	if max := time.Until(end) + time.Hour; ttl.TTL <= 0 || time.Duration(ttl.TTL)*time.Second > max {
		t.Fatalf("lease TTL %ds, want at most %s", ttl.TTL, max)
	}
	if time.Duration(ttl.GrantedTTL)*time.Second < end.Sub(t0)-time.Minute {
		t.Fatalf("lease granted for %ds, ends before the deadline's hour closes (%s)", ttl.GrantedTTL, end.Sub(t0))
	}

	// The lease ending deletes its records with no sweep.
	if _, err := cli.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Audit(ctx); err != nil || len(got) != 0 {
		t.Fatalf("audit after the lease ended: %d entries, %v", len(got), err)
	}
	// A store whose cached lease is gone takes another.
	if err := a.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "token.add"}, deadline); err != nil {
		t.Fatalf("AppendAudit after its lease was revoked: %v", err)
	}
	if got, err := b.Audit(ctx); err != nil || len(got) != 1 || got[0].Action != "token.add" {
		t.Fatalf("audit: %v, %v", got, err)
	}
}

// A sweep compacts etcd's history: no earlier revision of a deleted or
// replaced record can be read back.
func testSweepCompacts(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	p := c.newPrefix()
	clk := newClock()
	s := c.open(t, cli, p, clk)
	t0 := clk.Now()
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "attester.add", Detail: "lab"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, p+"audit/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("audit records: %v %v", resp, err)
	}
	rev := resp.Header.Revision
	st, err := s.Sweep(ctx, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted[issuer.CategoryAudit] != 1 || !st.Compacted {
		t.Fatalf("sweep: %+v", st)
	}
	_, err = cli.Get(ctx, p+"audit/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("reading the revision before the sweep: got %v, want it compacted", err)
	}
}

func testDeleteAbsent(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	s := c.open(t, cli, c.newPrefix(), newClock())
	if err := s.DeleteAttester(ctx, "nobody"); !errors.Is(err, issuer.ErrNotFound) {
		t.Fatalf("DeleteAttester of an absent one: %v", err)
	}
	if err := s.DeleteAdminToken(ctx, "nobody"); !errors.Is(err, issuer.ErrNotFound) {
		t.Fatalf("DeleteAdminToken of an absent one: %v", err)
	}
	if err := s.WithdrawSigningKey(ctx, issuer.WithdrawnKey{ID: "nokey", At: time.Now(), Until: time.Now().Add(time.Hour)}); !errors.Is(err, issuer.ErrNotFound) {
		t.Fatalf("WithdrawSigningKey of an absent one: %v", err)
	}
	if w, err := s.WithdrawnKeys(ctx); err != nil || len(w) != 0 {
		t.Fatalf("a withdrawal of no key was recorded: %v %v", w, err)
	}
}

func testClosed(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	s := c.open(t, cli, c.newPrefix(), newClock())
	w := startWatchUntilClosed(s)
	w.next(t, "the watch in place", 30*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if !errors.Is(err, etcdstore.ErrClosed) {
			t.Fatalf("Watch after Close returned %v, want ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Watch went on after Close")
	}
	if _, err := s.Attesters(ctx); !errors.Is(err, etcdstore.ErrClosed) {
		t.Fatalf("Attesters after Close: %v", err)
	}
	if _, err := s.LockSchedule(ctx); !errors.Is(err, etcdstore.ErrClosed) {
		t.Fatalf("LockSchedule after Close: %v", err)
	}
	if err := cli.Ctx().Err(); err != nil {
		t.Fatalf("Close closed the caller's client: %v", err)
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// A fresh store holds its KEK check alone: one configuration record,
// written in the store clock's hour; no epoch keys or leases are counted.
func testInventoryFresh(t *testing.T, c *cluster, cli *clientv3.Client) {
	ctx := testCtx(t)
	clk := newClock()
	t0 := clk.Now()
	clk.Set(t0.Add(25 * time.Minute))
	s := c.open(t, cli, c.newPrefix(), clk)
	if _, err := s.EpochKey(ctx, t0.Add(30*time.Hour)); err != nil {
		t.Fatal(err)
	}
	inv, err := s.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{issuer.CategoryAudit, issuer.CategorySigningKeys, issuer.CategoryPolicyHistory, issuer.CategoryConfiguration}
	if len(inv) != len(names) {
		t.Fatalf("inventory rows: %+v, want %v", inv, names)
	}
	for i, row := range inv {
		if row.Name != names[i] {
			t.Fatalf("inventory row %d is %s, want %s", i, row.Name, names[i])
		}
		want := 0
		if row.Name == issuer.CategoryConfiguration {
			want = 1
			if row.Oldest == nil || !row.Oldest.Equal(t0) || row.NextDeadline != nil {
				t.Fatalf("configuration: oldest %v, next %v; want %s and none", row.Oldest, row.NextDeadline, t0)
			}
		}
		if row.Count != want {
			t.Fatalf("%s: %d records, want %d", row.Name, row.Count, want)
		}
	}
}
