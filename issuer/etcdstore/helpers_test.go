package etcdstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
)

// cluster is one real 3-member etcd for a top-level test; every store
// opened on it gets a prefix of its own.
type cluster struct {
	ec     *testcluster.EtcdCluster
	kek    *kek.Key
	prefix atomic.Int64
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{ec: testcluster.StartEtcd(t), kek: k}
}

// client is a new client of every member, closed by t.Cleanup.
func (c *cluster) client(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.ec.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// newPrefix is a key namespace no other store of the run uses.
func (c *cluster) newPrefix() string { return fmt.Sprintf("/t%d/", c.prefix.Add(1)) }

// open opens a store on cli under prefix, closed by t.Cleanup.
func (c *cluster) open(t *testing.T, cli *clientv3.Client, prefix string, clock issuer.Clock) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: prefix, KEK: c.kek, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Hour)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
