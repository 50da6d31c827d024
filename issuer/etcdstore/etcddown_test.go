package etcdstore_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A campaign and a schedule-lock wait end with their ctx even while etcd
// is down. etcd's concurrency package cleans a cancelled wait up on the
// client's own context, which waited for as long as etcd was away: a
// replica stopped during an etcd outage hung in it (cmd/issuer's
// TestReplicaHealthzOnePartDown, under load).
func TestWaitsEndWithTheirContextWhileEtcdIsDown(t *testing.T) {
	c := startCluster(t)
	prefix := c.newPrefix()
	clk := newClock()
	cliA, cliB := c.client(t), c.client(t)
	a, b := c.open(t, cliA, prefix, clk), c.open(t, cliB, prefix, clk)
	ctx := testCtx(t)

	// a leads and holds the schedule lock; b waits for both.
	leadA, stopA := context.WithCancel(ctx)
	defer stopA()
	go a.Lead(leadA, "a", func(ctx context.Context) error { <-ctx.Done(); return nil })
	unlock, err := a.LockSchedule(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	waiting, stopB := context.WithCancel(ctx)
	ended := make(chan string, 2)
	go func() {
		b.Lead(waiting, "b", func(ctx context.Context) error { <-ctx.Done(); return nil })
		ended <- "Lead"
	}()
	go func() {
		if _, err := b.LockSchedule(waiting); err == nil {
			t.Error("b took the schedule lock a holds")
		}
		ended <- "LockSchedule"
	}()
	// Both of b's keys are in place (a's and b's election and lock keys):
	// b is waiting in etcd, not on its way there.
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := cliA.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		leaders, locks := 0, 0
		for _, kv := range resp.Kvs {
			k := strings.TrimPrefix(string(kv.Key), prefix)
			switch {
			case strings.HasPrefix(k, "leader/"):
				leaders++
			case strings.Contains(k, "lock"):
				locks++
			}
		}
		if leaders == 2 && locks == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's election and lock keys not in place after 30 s: %d leader keys, %d lock keys", leaders, locks)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := c.ec.Stop(); err != nil {
		t.Fatal(err)
	}
	stopB()
	for range 2 {
		select {
		case what := <-ended:
			t.Logf("b's %s ended with its context, etcd down", what)
		case <-time.After(30 * time.Second): // a failure bound: without the fix it never ends
			t.Fatal("a wait of b's did not end within 30 s of its context while etcd was down")
		}
	}

	// Back up, so that the stores close as usual.
	var wg sync.WaitGroup
	for _, m := range c.ec.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.ec.Restart(m); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}
