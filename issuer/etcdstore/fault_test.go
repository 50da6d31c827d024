package etcdstore_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
)

// TestLeaderMemberKilled kills the etcd leader under a store: each request
// is bounded by OpTimeout, the store answers again once etcd has a new
// leader, and then every kind of call works on the two members left; a
// sweep deletes, compacts and names the member it could not defragment.
func TestLeaderMemberKilled(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	ctx := testCtx(t)
	clk := newClock()
	p := c.newPrefix()
	s, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: p, KEK: c.kek, Clock: clk, OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Another replica's watch, on a client of its own.
	w := startWatch(t, c.open(t, c.client(t), p, clk))
	w.next(t, "the watch in place", 30*time.Second)
	t0 := clk.Now()
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "before"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	leader := -1
	for i, m := range c.ec.Members {
		st, err := cli.Status(ctx, "http://"+m.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no member says it leads")
	}
	if err := c.ec.Members[leader].Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var lastErr error
	for attempt := 0; ; attempt++ {
		_, lastErr = s.NextBundleSequence(ctx)
		if lastErr == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no write succeeded after the leader was killed: %v", lastErr)
		}
	}
	t.Logf("first write %s after the etcd leader was killed", time.Since(killed).Round(time.Millisecond))

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := s.PutSigningKey(ctx, issuer.SigningKey{ID: "k", Private: priv, Created: t0, ActiveAt: t0, NotBefore: t0,
		NotAfter: t0.Add(time.Hour), DestroyAt: t0.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	w.drain()
	if err := s.PutAttester(ctx, issuer.Attester{ID: "lab", Public: priv.Public().(ed25519.PublicKey), Added: t0}); err != nil {
		t.Fatal(err)
	}
	// The watch goes on (the client moves it to a live member if it was on
	// the dead one, or it is re-established).
	w.next(t, "an attester added after the kill", 30*time.Second)
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "after"}, t0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.LockSchedule(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := s.PublishBundle(ctx, issuer.PublishedBundle{Sequence: 1, Raw: "b"}); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.SigningKeys(ctx); err != nil || len(keys) != 1 {
		t.Fatalf("SigningKeys: %d, %v", len(keys), err)
	}
	st, err := s.Sweep(ctx, t0.Add(time.Hour))
	if st.Deleted[issuer.CategoryAudit] != 1 || !st.Compacted {
		t.Fatalf("sweep with a member down: %+v (%v)", st, err)
	}
	if err == nil || !strings.Contains(err.Error(), "member "+c.ec.Members[leader].Name+" (") {
		t.Fatalf("sweep with a member down: got %v, want it to name %s", err, c.ec.Members[leader].Name)
	}
	if got, err := s.Audit(ctx); err != nil || len(got) != 1 || got[0].Action != "after" {
		t.Fatalf("audit after the sweep: %v %v", got, err)
	}
}

// TestWatchReestablished: a watch whose only member goes down while the
// others change the state and compact its history resumes, when the member
// is back, at a compacted revision; it is made again and changed is
// called, since changes were missed.
func TestWatchReestablished(t *testing.T) {
	c := startCluster(t)
	ctx := testCtx(t)
	clk := newClock()
	p := c.newPrefix()
	one, err := clientv3.New(clientv3.Config{Endpoints: c.ec.Endpoints()[:1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { one.Close() })
	var logged lockedBuffer
	a, err := etcdstore.New(ctx, one, etcdstore.Options{Prefix: p, KEK: c.kek, Clock: clk,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	others, err := clientv3.New(clientv3.Config{Endpoints: c.ec.Endpoints()[1:], DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { others.Close() })
	b := c.open(t, others, p, clk)
	w := startWatch(t, a)
	w.next(t, "the watch in place", 30*time.Second)

	m := c.ec.Members[0]
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	t0 := clk.Now()
	// If the member was etcd's leader, a request caught in the election
	// fails at its OpTimeout: the next one goes through.
	for {
		err := b.PutAdminToken(ctx, issuer.AdminToken{Name: "ops", Hash: [32]byte{7}, Created: t0})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	for {
		st, err := b.Sweep(ctx, t0)
		if st.Compacted {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("sweep did not compact: %v", err)
		}
	}
	w.drain()
	if err := c.ec.Restart(m); err != nil {
		t.Fatal(err)
	}
	w.next(t, "the member back", 60*time.Second)
	// Not only the missed events replayed: the watch was made again.
	if !strings.Contains(logged.String(), "watch ended; re-establishing it") || !strings.Contains(logged.String(), "compacted") {
		t.Fatalf("no re-established watch logged: %s", logged.String())
	}
	tokens, err := a.AdminTokens(ctx)
	if err != nil || len(tokens) != 1 {
		t.Fatalf("AdminTokens through the member back: %v, %v", tokens, err)
	}
	// And it watches on.
	w.drain()
	if err := b.DeleteAdminToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	w.next(t, "a token removed after the re-established watch", 30*time.Second)
}

// lockedBuffer is a log sink safe for the store's goroutines.
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
