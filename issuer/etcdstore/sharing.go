package etcdstore

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/healthcode/healthcode/issuer"
)

// LockSchedule takes the schedule lock shared by every replica on this
// prefix: first the local half (one process does not contend with
// itself: a session's lock key is one per session), then an etcd mutex on
// the store's session. Waiting is bounded by ctx. If the replica dies
// holding it, the lock passes on when its session lapses (sessionTTL).
func (s *Store) LockSchedule(ctx context.Context) (unlock func(), err error) {
	select {
	case s.sched <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("etcdstore: schedule lock: %w", ctx.Err())
	}
	release := func() { <-s.sched }
	sess, err := s.lockSession(ctx)
	if err != nil {
		release()
		return nil, fmt.Errorf("etcdstore: schedule lock: %w", err)
	}
	m := concurrency.NewMutex(sess, s.key(prefixScheduleLock))
	if err := untilDone(ctx, func() error { return m.Lock(ctx) }); err != nil {
		release()
		// An expired session is useless; after a wait cut short, Lock may
		// still be cleaning up, or even take the lock, on that session:
		// revoking it deletes whatever lock key it holds.
		if errors.Is(err, concurrency.ErrSessionExpired) || ctx.Err() != nil {
			s.endSession(sess)
		}
		return nil, fmt.Errorf("etcdstore: schedule lock: %w", err)
	}
	return func() {
		op, cancel := s.op(context.Background())
		err := m.Unlock(op)
		cancel()
		if err != nil {
			// Revoking the session deletes the lock key with it.
			s.log.Warn("etcdstore: releasing the schedule lock failed; revoking its session", "err", err)
			s.endSession(sess)
		}
		release()
	}, nil
}

// lockSession is the store's session for the schedule lock, made anew if
// the last one lapsed.
func (s *Store) lockSession(ctx context.Context) (*concurrency.Session, error) {
	s.mu.Lock()
	sess := s.lockSess
	s.mu.Unlock()
	if sess != nil {
		select {
		case <-sess.Done():
			s.endSession(sess)
		default:
			return sess, nil
		}
	}
	sess, err := s.newSession(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.lockSess = sess
	s.mu.Unlock()
	return sess, nil
}

// PublishedBundle returns the bundle in force, or issuer.ErrNotFound.
func (s *Store) PublishedBundle(ctx context.Context) (issuer.PublishedBundle, error) {
	resp, err := s.get(ctx, s.key(keyPublishedBundle))
	if err != nil {
		return issuer.PublishedBundle{}, fmt.Errorf("etcdstore: read published bundle: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return issuer.PublishedBundle{}, issuer.ErrNotFound
	}
	b, err := decode[storedBundle](resp.Kvs[0].Value, "published bundle")
	if err != nil {
		return issuer.PublishedBundle{}, err
	}
	return issuer.PublishedBundle{Sequence: b.Sequence, Raw: b.Raw}, nil
}

// PublishBundle makes b the bundle in force if its sequence is above the
// published one's (a compare-and-set on the stored record), else returns
// issuer.ErrStale.
func (s *Store) PublishBundle(ctx context.Context, b issuer.PublishedBundle) error {
	if b.Sequence == 0 {
		// No bundle is ever above it (NextBundleSequence starts at 1).
		return fmt.Errorf("etcdstore: published bundle: sequence 0 is below every sequence: %w", issuer.ErrStale)
	}
	if b.Raw == "" {
		return errors.New("etcdstore: published bundle: bundle is empty")
	}
	v, err := s.encode(storedBundle{W: s.writeHour(), Sequence: b.Sequence, Raw: b.Raw})
	if err != nil {
		return err
	}
	k := s.key(keyPublishedBundle)
	stale := false
	err = s.casLoop(ctx, "published bundle", func() (bool, error) {
		resp, err := s.get(ctx, k)
		if err != nil {
			return false, err
		}
		if len(resp.Kvs) == 1 {
			held, err := decode[storedBundle](resp.Kvs[0].Value, "published bundle")
			if err != nil {
				return false, err
			}
			if b.Sequence <= held.Sequence {
				stale = true
				return true, nil
			}
		}
		r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(unchanged(k, modRev(resp))).Then(clientv3.OpPut(k, v))
		})
		if err != nil {
			return false, err
		}
		return r.Succeeded, nil
	})
	if err != nil {
		return err
	}
	if stale {
		return issuer.ErrStale
	}
	return nil
}

// untilDone runs f and returns its error, or ctx's once ctx ends first,
// leaving f to finish by itself. etcd's concurrency package cleans up a
// cancelled Election.Campaign or Mutex.Lock with the client's own
// context (Resign, Unlock on client.Ctx() in v3.6), which waits as long
// as etcd does not answer: a replica stopped while etcd was down hung in
// it. The caller revokes the session, which undoes anything f still does;
// closing the client ends f.
func untilDone(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
