package etcdstore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
)

// TestReplicas runs the cases of several replicas on one state: watch,
// epoch keys, leadership.
func TestReplicas(t *testing.T) {
	c := startCluster(t)
	t.Run("WatchSeesOtherClients", func(t *testing.T) { testWatch(t, c) })
	t.Run("EpochKeyOnceForAll", func(t *testing.T) { testEpochKey(t, c) })
	t.Run("LeadHandsOver", func(t *testing.T) { testLead(t, c) })
}

// watcher runs Watch on s and counts its calls.
type watcher struct {
	calls chan time.Time
	done  chan error
}

func startWatch(t *testing.T, s *etcdstore.Store) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{calls: make(chan time.Time, 100), done: make(chan error, 1)}
	go func() { w.done <- s.Watch(ctx, func() { w.calls <- time.Now() }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-w.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})
	return w
}

// startWatchUntilClosed runs Watch on s until the store is closed.
func startWatchUntilClosed(s *etcdstore.Store) *watcher {
	w := &watcher{calls: make(chan time.Time, 100), done: make(chan error, 1)}
	go func() { w.done <- s.Watch(context.Background(), func() { w.calls <- time.Now() }) }()
	return w
}

// next waits for a call of changed and returns when it came.
func (w *watcher) next(t *testing.T, what string, bound time.Duration) time.Time {
	t.Helper()
	select {
	case at := <-w.calls:
		return at
	case err := <-w.done:
		t.Fatalf("%s: Watch returned %v", what, err)
	case <-time.After(bound):
		t.Fatalf("%s: no change seen in %s", what, bound)
	}
	return time.Time{}
}

// drain takes the calls already made.
func (w *watcher) drain() {
	for {
		select {
		case <-w.calls:
		default:
			return
		}
	}
}

func testWatch(t *testing.T, c *cluster) {
	ctx := testCtx(t)
	p := c.newPrefix()
	clk := newClock()
	a := c.open(t, c.client(t), p, clk)
	b := c.open(t, c.client(t), p, clk)
	w := startWatch(t, a)
	w.next(t, "the watch in place", 30*time.Second)

	t0 := clk.Now()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	changes := []struct {
		what string
		do   func() error
	}{
		{"an attester added", func() error {
			return b.PutAttester(ctx, issuer.Attester{ID: "lab", Public: priv.Public().(ed25519.PublicKey), Added: t0})
		}},
		{"an admin token added", func() error {
			return b.PutAdminToken(ctx, issuer.AdminToken{Name: "ops", Hash: [32]byte{1}, Created: t0})
		}},
		{"a policy set", func() error {
			return b.PutPolicy(ctx, issuer.PolicyRecord{Version: 2, Raw: []byte(`{}`), Set: t0}, t0.Add(time.Hour))
		}},
		{"a signing key added", func() error {
			return b.PutSigningKey(ctx, issuer.SigningKey{ID: "k", Private: priv, Created: t0, ActiveAt: t0, NotBefore: t0,
				NotAfter: t0.Add(time.Hour), DestroyAt: t0.Add(2 * time.Hour)})
		}},
		{"a signing key withdrawn", func() error {
			return b.WithdrawSigningKey(ctx, issuer.WithdrawnKey{ID: "k", At: t0, Until: t0.Add(time.Hour)})
		}},
		{"a bundle published", func() error {
			return b.PublishBundle(ctx, issuer.PublishedBundle{Sequence: 1, Raw: "b1"})
		}},
		{"an attester removed", func() error { return b.DeleteAttester(ctx, "lab") }},
		{"an admin token removed", func() error { return b.DeleteAdminToken(ctx, "ops") }},
	}
	var worst time.Duration
	for _, ch := range changes {
		w.drain()
		if err := ch.do(); err != nil {
			t.Fatalf("%s: %v", ch.what, err)
		}
		done := time.Now()
		// DESIGN §8: a change is in force on every replica within a second.
		at := w.next(t, ch.what, time.Second)
		if d := at.Sub(done); d > worst {
			worst = d
		}
	}
	t.Logf("slowest change seen by the other store's watch: %s after its write returned", worst)
}

func testEpochKey(t *testing.T, c *cluster) {
	ctx := testCtx(t)
	p := c.newPrefix()
	clk := newClock()
	cli := c.client(t)
	stores := []*etcdstore.Store{c.open(t, cli, p, clk), c.open(t, c.client(t), p, clk), c.open(t, c.client(t), p, clk)}
	end := clk.Now().Add(49 * time.Hour)
	for round := 0; round < 3; round++ {
		end := end.Add(time.Duration(round) * time.Hour)
		keys := make([][]byte, len(stores))
		errs := make([]error, len(stores))
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				keys[i], errs[i] = s.EpochKey(ctx, end)
			}()
		}
		wg.Wait()
		for i := range stores {
			if errs[i] != nil {
				t.Fatalf("round %d: EpochKey on store %d: %v", round, i, errs[i])
			}
			if len(keys[i]) != etcdstore.EpochKeySize || !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("round %d: stores got different epoch keys for one end", round)
			}
		}
		again, err := stores[1].EpochKey(ctx, end)
		if err != nil || !bytes.Equal(again, keys[0]) {
			t.Fatalf("round %d: EpochKey again: %v", round, err)
		}
		for k, v := range raw(t, cli, p+"epoch/") {
			if bytes.Contains(v, keys[0]) {
				t.Fatalf("%s holds the epoch key as it is", k)
			}
		}
	}
	resp, err := cli.Get(ctx, p+"epoch/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 3 {
		t.Fatalf("epoch records: %v %v", resp, err)
	}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			t.Fatalf("%s has no lease: etcd would keep it if no sweep ran", kv.Key)
		}
	}
	// Past ends are refused; a sweep after the first end deletes its key
	// alone.
	if _, err := stores[0].EpochKey(ctx, clk.Now()); err == nil {
		t.Fatal("EpochKey of an epoch ending now was not refused")
	}
	clk.Set(end)
	if _, err := stores[0].EpochKey(ctx, end); err == nil {
		t.Fatal("EpochKey of an ended epoch was not refused")
	}
	if _, err := stores[2].Sweep(ctx, end); err != nil {
		t.Fatal(err)
	}
	resp, err = cli.Get(ctx, p+"epoch/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 2 {
		t.Fatalf("epoch records after the sweep: %d, %v; want 2", resp.Count, err)
	}
	if k, err := stores[0].EpochKey(ctx, end.Add(time.Hour)); err != nil || len(k) != etcdstore.EpochKeySize {
		t.Fatalf("EpochKey of a live epoch after the sweep: %v", err)
	}
}

// elector runs Lead for one store on a client of its own.
type elector struct {
	cli  *clientv3.Client
	s    *etcdstore.Store
	done chan error
}

func testLead(t *testing.T, c *cluster) {
	ctx := testCtx(t)
	p := c.newPrefix()
	var active atomic.Int32
	var overlap atomic.Bool
	leads := make(chan string, 10)
	start := func(id string) *elector {
		cli := c.client(t)
		e := &elector{cli: cli, s: c.open(t, cli, p, newClock()), done: make(chan error, 1)}
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			e.done <- e.s.Lead(lctx, id, func(ctx context.Context) error {
				if active.Add(1) > 1 {
					overlap.Store(true)
				}
				defer active.Add(-1)
				leads <- id
				<-ctx.Done()
				return nil
			})
		}()
		t.Cleanup(func() {
			cancel()
			<-e.done
		})
		return e
	}
	waitLeader := func(what string, bound time.Duration) (string, time.Duration) {
		t.Helper()
		began := time.Now()
		select {
		case id := <-leads:
			return id, time.Since(began)
		case <-time.After(bound):
			t.Fatalf("%s: no replica took the lead in %s", what, bound)
		}
		return "", 0
	}
	ids := map[string]*elector{}
	for _, id := range []string{"replica-a", "replica-b"} {
		ids[id] = start(id)
	}
	first, _ := waitLeader("at start", 30*time.Second)
	if got, err := ids[first].s.Leader(ctx); err != nil || got != first {
		t.Fatalf("Leader: %q, %v; want %q", got, err, first)
	}

	// The leader's store closed: its session is revoked, the other leads
	// at once.
	if err := ids[first].s.Close(); err != nil {
		t.Fatal(err)
	}
	err := <-ids[first].done
	ids[first].done <- err // for the cleanup
	if !errors.Is(err, etcdstore.ErrClosed) {
		t.Fatalf("Lead on a closed store returned %v, want ErrClosed", err)
	}
	second, took := waitLeader("after the leader's store was closed", 30*time.Second)
	t.Logf("leadership handed over %s after the leader's store was closed", took.Round(time.Millisecond))
	if second == first {
		t.Fatalf("%s leads again after its store was closed", first)
	}

	// A third replica campaigns; the leader's client is closed, as when
	// its process dies: nothing is revoked, its session lapses after its
	// TTL (5 s) and the third leads.
	ids["replica-c"] = start("replica-c")
	if got, err := ids["replica-c"].s.Leader(ctx); err != nil || got != second {
		t.Fatalf("Leader: %q, %v; want %q", got, err, second)
	}
	if err := ids[second].cli.Close(); err != nil {
		t.Fatal(err)
	}
	third, took := waitLeader("after the leader's client was closed", 30*time.Second)
	t.Logf("leadership handed over %s after the leader's client was closed (session TTL 5 s)", took.Round(time.Millisecond))
	if third != "replica-c" {
		t.Fatalf("%s leads after its client was closed", third)
	}
	if got, err := ids[third].s.Leader(ctx); err != nil || got != third {
		t.Fatalf("Leader: %q, %v; want %q", got, err, third)
	}
	if overlap.Load() {
		t.Fatal("two replicas led at once")
	}
}
