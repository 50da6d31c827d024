package etcdstore

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/issuer"
)

// What 'issuer migrate' needs to copy a bbolt issuer's configuration into
// a fresh prefix, besides the StateStore methods: a check that the prefix
// is fresh, a withdrawal whose key is gone already, and a bundle sequence
// that continues above the bbolt one.

// stateKeys are the keys and prefixes that hold an issuer's state: all
// but the KEK check (New writes it on a fresh prefix) and the shared
// lease records.
var stateKeys = []string{
	keyBundleKey, keyBundleSequence, keyPublishedBundle, keyPolicy,
	prefixAttester, prefixAdminToken, prefixKeys, prefixWithdrawn,
	prefixPolicyHist, prefixAudit, prefixEpoch,
}

// HeldState names the first kind of issuer state the prefix holds ("" if
// none): a prefix an issuer has run on is not a target for migration.
func (s *Store) HeldState(ctx context.Context) (string, error) {
	for _, rel := range stateKeys {
		resp, err := s.get(ctx, s.key(rel), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return "", fmt.Errorf("etcdstore: read %s: %w", rel, err)
		}
		if resp.Count > 0 {
			return rel, nil
		}
	}
	return "", nil
}

// ImportWithdrawal records a withdrawal until w.Until for a key this store
// never held (another store withdrew it, and its private part is gone), so
// that the bundle keeps naming it as withdrawn.
func (s *Store) ImportWithdrawal(ctx context.Context, w issuer.WithdrawnKey) error {
	wk, v, deadline, err := s.withdrawal(w)
	if err != nil {
		return err
	}
	return s.withLease(ctx, deadline, func(lease clientv3.LeaseID) error {
		_, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn { return t.Then(clientv3.OpPut(wk, v, leaseOpt(lease)...)) })
		return err
	})
}

// RaiseBundleSequence makes every later NextBundleSequence return more
// than floor (a compare-and-set; a stored sequence above floor is kept),
// so a verifier that synced from the bbolt issuer never sees a rollback.
func (s *Store) RaiseBundleSequence(ctx context.Context, floor uint64) error {
	k := s.key(keyBundleSequence)
	return s.casLoop(ctx, "bundle sequence", func() (bool, error) {
		resp, err := s.get(ctx, k)
		if err != nil {
			return false, err
		}
		if len(resp.Kvs) == 1 {
			seq, err := decode[storedSequence](resp.Kvs[0].Value, "bundle sequence")
			if err != nil {
				return false, err
			}
			if seq.N >= floor {
				return true, nil
			}
		}
		v, err := s.encode(storedSequence{W: s.writeHour(), N: floor})
		if err != nil {
			return false, err
		}
		r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(unchanged(k, modRev(resp))).Then(clientv3.OpPut(k, v))
		})
		if err != nil {
			return false, err
		}
		return r.Succeeded, nil
	})
}
