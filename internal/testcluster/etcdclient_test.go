package testcluster

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestEtcdClientAgainstDebiansEtcd pins the client the issuer's etcd
// adapter will use (go.etcd.io/etcd/client/v3, see go.mod) against the
// server Debian ships (3.4): create-if-absent by Txn, a lease, a watch, an
// election, compaction and defragmentation, and a member killed under it.
func TestEtcdClientAgainstDebiansEtcd(t *testing.T) {
	ec := StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 5*time.Second) }

	putIfAbsent := func(k, v string) bool {
		t.Helper()
		c, done := op()
		defer done()
		r, err := cli.Txn(c).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, v)).Commit()
		if err != nil {
			t.Fatalf("txn %s: %v", k, err)
		}
		return r.Succeeded
	}
	if !putIfAbsent("/hc/epoch/1", "a") {
		t.Fatal("first create-if-absent refused")
	}
	if putIfAbsent("/hc/epoch/1", "b") {
		t.Fatal("second create-if-absent succeeded")
	}

	// A watch from the start sees a write made through another member.
	w := cli.Watch(ctx, "/hc/policy")
	other, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints()[2:], DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lease, err := other.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Put(ctx, "/hc/policy", "v2", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-w:
		if err := resp.Err(); err != nil || len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "v2" ||
			resp.Events[0].Kv.Lease != int64(lease.ID) {
			t.Fatalf("watch: %+v %v", resp.Events, err)
		}
	case <-ctx.Done():
		t.Fatal("watch saw nothing")
	}
	// Revoking the lease deletes what it holds.
	if _, err := other.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "/hc/policy"); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("after revoke: %v %v", r, err)
	}

	// Election: one leader; its value is what observers get.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, "/hc/maintenance")
	if err := el.Campaign(ctx, "replica-1"); err != nil {
		t.Fatal(err)
	}
	if l, err := el.Leader(ctx); err != nil || string(l.Kvs[0].Value) != "replica-1" {
		t.Fatalf("leader: %v %v", l, err)
	}

	// Compaction and defragmentation on every member.
	r, err := cli.Get(ctx, "/hc/epoch/1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	for _, e := range ec.Endpoints() {
		if _, err := cli.Defragment(ctx, e); err != nil {
			t.Fatalf("defragment %s: %v", e, err)
		}
	}

	// A member killed: writes go on through the others, each bounded by
	// its own timeout and tried again.
	if err := ec.Members[0].Kill(); err != nil {
		t.Fatal(err)
	}
	took := poll(t, "txn with a member killed", ReadyTimeout, func() error {
		c, done := context.WithTimeout(ctx, 2*time.Second)
		defer done()
		_, err := cli.Txn(c).If(clientv3.Compare(clientv3.CreateRevision("/hc/after"), "=", 0)).Then(clientv3.OpPut("/hc/after", "x")).Commit()
		return err
	})
	t.Logf("txn succeeded %s after a member was killed", took)
}
