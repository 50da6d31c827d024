package etcdstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchRetry is the pause before a watch that ended is made again.
const watchRetry = 100 * time.Millisecond

// watched are the keys whose change a replica must act on: what the
// issuer decides with (policy, attesters, admin tokens, signing keys and
// withdrawals, the bundle key) and what it serves (the published bundle).
// Audit, history, epoch keys, sequences and leases are not.
var watched = []string{
	keyPolicy, prefixAttester, prefixAdminToken, keyBundleKey, keyPublishedBundle,
	prefixKeys, prefixWithdrawn,
}

func (s *Store) isWatched(k []byte) bool {
	rel, ok := strings.CutPrefix(string(k), s.p)
	if !ok {
		return false
	}
	for _, w := range watched {
		if rel == w || (strings.HasSuffix(w, "/") && strings.HasPrefix(rel, w)) {
			return true
		}
	}
	return false
}

// Watch calls changed after any change under the prefix to the policy,
// attesters, admin tokens, signing keys, withdrawals, the bundle key or
// the published bundle, until ctx ends, when it returns ctx.Err().
// Changes close together are coalesced into one call, and calls never
// overlap: changed re-reads what it needs. changed is also called once the
// watch is in place, and again each time it is re-established (after a
// compaction, or when its member lost the cluster's leader), since changes
// may have been missed in between; a caller that loaded its state before
// calling Watch misses nothing. Close ends it with ErrClosed.
func (s *Store) Watch(ctx context.Context, changed func()) error {
	if s.isClosed() {
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
				changed()
			}
		}
	}()
	signal := func() {
		select {
		case kick <- struct{}{}:
		default: // a call is pending already: it will see this change too
		}
	}
	// The caller's changed is not called after Watch returns.
	defer func() {
		cancel()
		<-done
	}()

	for ctx.Err() == nil {
		// Require a leader: a member cut off from the others ends the
		// watch instead of staying silent.
		wch := s.c.Watch(clientv3.WithRequireLeader(ctx), s.p, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		for resp := range wch {
			if resp.Created {
				signal()
				continue
			}
			if err := resp.Err(); err != nil {
				if ctx.Err() == nil {
					s.log.Warn("etcdstore: watch ended; re-establishing it", "err", err)
				}
				break
			}
			for _, ev := range resp.Events {
				if s.isWatched(ev.Kv.Key) {
					signal()
					break
				}
			}
		}
		if s.isClosed() {
			return ErrClosed
		}
		if err := s.c.Ctx().Err(); err != nil {
			return fmt.Errorf("etcdstore: watch: the etcd client is closed: %w", err)
		}
		// Not at once: a member without a leader refuses a new watch too.
		pause := time.NewTimer(watchRetry)
		select {
		case <-ctx.Done():
			pause.Stop()
		case <-pause.C:
		}
	}
	if s.isClosed() {
		return ErrClosed
	}
	return ctx.Err()
}
