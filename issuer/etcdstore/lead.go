package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/healthcode/healthcode/issuer"
)

// leadRetry is the pause before campaigning again after a failed round
// (etcd unreachable, or lead returned at once), so a failing replica does
// not spin.
const leadRetry = time.Second

// Lead campaigns for maintenance in an etcd election under Prefix
// "leader/", on a session whose lease lapses sessionTTL (5 s) after the
// replica stops refreshing it. While this replica leads it runs
// lead(leadCtx); leadCtx ends when leadership is lost (the session ended)
// or ctx ends. When lead returns the replica resigns and campaigns again.
// id names the replica to others (Leader); it is not secret. Lead returns
// ctx.Err() when ctx ends, ErrClosed when the store is closed (Close
// revokes the session: another replica leads at once).
func (s *Store) Lead(ctx context.Context, id string, lead func(ctx context.Context) error) error {
	if id == "" {
		return errors.New("etcdstore: lead: a replica id is required")
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.isClosed() {
			return ErrClosed
		}
		ran, err := s.leadOnce(ctx, id, lead)
		if err != nil && ctx.Err() == nil && !errors.Is(err, ErrClosed) {
			s.log.Warn("etcdstore: maintenance leadership round ended", "replica", id, "err", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.isClosed() {
			return ErrClosed
		}
		if err := s.c.Ctx().Err(); err != nil {
			return fmt.Errorf("etcdstore: lead: the etcd client is closed: %w", err)
		}
		if err != nil || !ran {
			wait := time.NewTimer(leadRetry)
			select {
			case <-ctx.Done():
				wait.Stop()
				return ctx.Err()
			case <-wait.C:
			}
		}
	}
}

// leadOnce is one campaign on a new session, and one run of lead if it is
// won; the session is revoked at the end, which resigns. ran says whether
// lead ran for at least leadRetry.
func (s *Store) leadOnce(ctx context.Context, id string, lead func(ctx context.Context) error) (ran bool, err error) {
	sess, err := s.newSession(ctx)
	if err != nil {
		return false, err
	}
	defer s.endSession(sess)
	// The campaign and the leadership both end with the session or ctx.
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sess.Ctx(), cancel)
	defer stop()

	el := concurrency.NewElection(sess, s.key(prefixLeader))
	// The session, revoked on return, ends a campaign left running.
	if err := untilDone(leadCtx, func() error { return el.Campaign(leadCtx, id) }); err != nil {
		return false, fmt.Errorf("etcdstore: campaign: %w", err)
	}
	s.log.Info("etcdstore: this replica leads maintenance", "replica", id)
	start := time.Now()
	err = lead(leadCtx)
	lost := leadCtx.Err() != nil && ctx.Err() == nil
	s.log.Info("etcdstore: this replica no longer leads maintenance", "replica", id, "session_lost", lost)
	return time.Since(start) >= leadRetry, err
}

// Leader returns the id of the replica that leads maintenance, or an
// error wrapping issuer.ErrNotFound when none does.
func (s *Store) Leader(ctx context.Context) (string, error) {
	// The election's leader is the campaign key created first.
	resp, err := s.get(ctx, s.key(prefixLeader), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("etcdstore: read the leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("etcdstore: no replica leads maintenance: %w", issuer.ErrNotFound)
	}
	return string(resp.Kvs[0].Value), nil
}
