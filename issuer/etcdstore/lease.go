package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Deadline leases: a record with a deadline is attached to the lease that
// ends at the close of its deadline's hour, so etcd deletes it even if no
// sweep runs (Sweep deletes it at the deadline itself). One lease per hour
// serves every record and every replica: the first replica to need it
// grants it and files it under P leases/E (itself on that lease, so the
// entry goes with it); the others read it there.
//
// etcd extends every lease to its full TTL when its own leader changes
// (unless lease checkpointing is on), so the lease is a backstop that can
// come late, never early; the sweep is the schedule.
const (
	leaseBucket = time.Hour
	// leaseFloor is the least TTL granted: a record whose deadline is past
	// or close still gets a lease, one that leaves the sweep time to count it.
	leaseFloor = 5 * time.Minute
	// maxLeaseTTL is etcd's own limit (MaxLeaseTTL, 9e9 s); beyond it a
	// record has no lease and only the sweep deletes it.
	maxLeaseTTL = 9_000_000_000 * time.Second
)

// leaseFor returns the shared lease for a record due at deadline
// (NoLease when the deadline is too far for etcd).
func (s *Store) leaseFor(ctx context.Context, deadline int64) (clientv3.LeaseID, error) {
	now := s.clock.Now()
	due := time.Unix(deadline, 0)
	if floor := now.Add(leaseFloor); due.Before(floor) {
		due = floor
	}
	expiry := due.Truncate(leaseBucket).Add(leaseBucket)
	ttl := expiry.Sub(now)
	if ttl > maxLeaseTTL {
		return clientv3.NoLease, nil
	}
	e := expiry.Unix()

	s.leaseMu.Lock()
	id, ok := s.leases[e]
	s.leaseMu.Unlock()
	if ok {
		return id, nil
	}

	k := s.key(prefixLeases + pad(e))
	resp, err := s.get(ctx, k)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: read lease: %w", err)
	}
	if len(resp.Kvs) == 1 {
		if id, err := parseLeaseID(resp.Kvs[0].Value); err == nil {
			s.remember(e, id)
			return id, nil
		}
	}
	op, cancel := s.op(ctx)
	g, err := s.c.Grant(op, int64((ttl+time.Second-1)/time.Second))
	cancel()
	if err != nil {
		return 0, fmt.Errorf("etcdstore: grant lease: %w", unavailable(ctx, err))
	}
	v := strconv.FormatInt(int64(g.ID), 16)
	tr, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
		// Replace an entry whose value does not parse (never written so).
		return t.If(unchanged(k, modRev(resp))).Then(clientv3.OpPut(k, v, clientv3.WithLease(g.ID))).Else(clientv3.OpGet(k))
	})
	if err != nil {
		s.revoke(g.ID)
		return 0, fmt.Errorf("etcdstore: file lease: %w", err)
	}
	if tr.Succeeded {
		s.remember(e, g.ID)
		return g.ID, nil
	}
	// Another replica filed one first: use it, drop ours.
	s.revoke(g.ID)
	kvs := tr.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return 0, errors.New("etcdstore: lease entry vanished while filed")
	}
	id, err = parseLeaseID(kvs[0].Value)
	if err != nil {
		return 0, err
	}
	s.remember(e, id)
	return id, nil
}

func modRev(r *clientv3.GetResponse) int64 {
	if len(r.Kvs) == 0 {
		return 0
	}
	return r.Kvs[0].ModRevision
}

func parseLeaseID(v []byte) (clientv3.LeaseID, error) {
	n, err := strconv.ParseInt(string(v), 16, 64)
	if err != nil || n == 0 {
		return 0, errors.New("etcdstore: stored lease entry is malformed")
	}
	return clientv3.LeaseID(n), nil
}

func (s *Store) remember(expiry int64, id clientv3.LeaseID) {
	now := s.clock.Now().Unix()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	for e := range s.leases {
		if e <= now {
			delete(s.leases, e)
		}
	}
	s.leases[expiry] = id
}

// forget drops a cached lease that etcd no longer has (revoked, or lost
// with a restored cluster).
func (s *Store) forget(id clientv3.LeaseID) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	for e, l := range s.leases {
		if l == id {
			delete(s.leases, e)
		}
	}
}

func (s *Store) revoke(id clientv3.LeaseID) {
	op, cancel := s.op(context.Background())
	defer cancel()
	if _, err := s.c.Revoke(op, id); err != nil && !isLeaseGone(err) {
		s.log.Warn("etcdstore: revoking an unused lease failed; it lapses by itself", "err", err)
	}
}

func isLeaseGone(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || rpctypes.Error(err) == rpctypes.ErrLeaseNotFound
}

// withLease runs a write that attaches the lease for deadline, once more
// with a fresh lease if etcd no longer has the cached one.
func (s *Store) withLease(ctx context.Context, deadline int64, write func(clientv3.LeaseID) error) error {
	for attempt := 0; ; attempt++ {
		id, err := s.leaseFor(ctx, deadline)
		if err != nil {
			return err
		}
		err = write(id)
		if err == nil || attempt > 0 || !isLeaseGone(err) {
			return err
		}
		s.forget(id)
	}
}

// leaseOpt is the put option attaching id (none for NoLease).
func leaseOpt(id clientv3.LeaseID) []clientv3.OpOption {
	if id == clientv3.NoLease {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithLease(id)}
}
