package redisstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

// TestReplicasShareEpochKeysFromEtcd: two replicas, each with its own etcd
// and Redis clients and its own etcdstore as EpochKeys (production's
// wiring), on a real 3-member etcd and 3+3 Redis Cluster. What one
// redeems the other refuses; sixteen redemptions of one attestation
// spread over both, in an epoch neither has a key for yet (both ask etcd
// at once), make exactly one record.
func TestReplicasShareEpochKeysFromEtcd(t *testing.T) {
	ec := testcluster.StartEtcd(t)
	rc := testcluster.StartRedis(t)
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(t0)
	replica := func() *Store {
		cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		es, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: "/hc/", KEK: k, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { es.Close() })
		s, err := New(clusterClient(t, rc), Options{EpochKeys: es, Prefix: "hc:", Clock: clock, WaitReplicas: 1, WaitTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := replica(), replica()
	red := func(s *Store, rk issuer.ReplayKey) error {
		_, err := s.Redeem(ctx, issuer.Redemption{Replay: []issuer.ReplayKey{rk}, Colour: policy.Green,
			Day: t0.Truncate(24 * time.Hour), CountDeadline: t0.Add(400 * 24 * time.Hour)})
		return err
	}
	first := issuer.ReplayKey{Attester: "lab-1", ID: "att-1", Deadline: t0.Add(20 * time.Hour), Accepted: t0.Add(30 * time.Hour)}
	if err := red(a, first); err != nil {
		t.Fatal(err)
	}
	var re *issuer.RedeemedError
	if err := red(b, first); !errors.As(err, &re) {
		t.Fatalf("the other replica, same attestation: %v, want refused", err)
	}
	if ka, kb := recordKeyOf(t, a, first), recordKeyOf(t, b, first); ka != kb {
		t.Fatalf("replicas name one attestation %q and %q", ka, kb)
	}

	raced := issuer.ReplayKey{Attester: "lab-1", ID: "att-2", Deadline: t0.Add(90 * time.Hour), Accepted: t0.Add(100 * time.Hour)}
	errs := make([]error, 16)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			s := a
			if i%2 == 1 {
				s = b
			}
			errs[i] = red(s, raced)
		}()
	}
	start.Done()
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.As(err, &re):
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d racing redemptions over two replicas won, want 1", wins, len(errs))
	}
	if ka, kb := recordKeyOf(t, a, raced), recordKeyOf(t, b, raced); ka != kb {
		t.Fatalf("replicas name the raced attestation %q and %q", ka, kb)
	}
}
