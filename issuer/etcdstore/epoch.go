package etcdstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EpochKeySize is the length of a replay epoch key.
const EpochKeySize = 32

// EpochKey returns the 32-byte replay epoch key of the epoch ending at end
// (rounded up to the second), the same on every replica: the first to ask
// makes it (a create-if-absent Txn) and one that loses the race reads the
// winner's. It is stored sealed under the KEK, with the end named in the
// additional data, on the lease of end's hour; Sweep deletes it once end
// has passed, and with it the means to find any record filed under it.
// An end already past is refused: its key is gone, or about to be.
func (s *Store) EpochKey(ctx context.Context, end time.Time) ([]byte, error) {
	sec, err := deadlineSeconds(end, "epoch key")
	if err != nil {
		return nil, err
	}
	if now := s.clock.Now(); !end.After(now) {
		return nil, fmt.Errorf("etcdstore: epoch key: the epoch ending %s has ended (now %s)",
			end.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	k := s.key(prefixEpoch + pad(sec))
	resp, err := s.get(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read epoch key: %w", err)
	}
	if len(resp.Kvs) == 1 {
		return s.openEpochKey(resp.Kvs[0].Value, sec)
	}
	fresh := make([]byte, EpochKeySize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("etcdstore: epoch key: %w", err)
	}
	sealed, err := s.opts.KEK.Seal(fresh, epochKeyAAD(sec))
	if err != nil {
		return nil, err
	}
	v, err := s.encode(storedSecret{W: s.writeHour(), Sealed: sealed})
	if err != nil {
		return nil, err
	}
	var out []byte
	err = s.withLease(ctx, sec, func(lease clientv3.LeaseID) error {
		r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(absent(k)).Then(clientv3.OpPut(k, v, leaseOpt(lease)...)).Else(clientv3.OpGet(k))
		})
		if err != nil {
			return err
		}
		if r.Succeeded {
			out = fresh
			return nil
		}
		kvs := r.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 {
			return errors.New("epoch key vanished while read")
		}
		out, err = s.openEpochKey(kvs[0].Value, sec)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: write epoch key: %w", err)
	}
	return out, nil
}

func (s *Store) openEpochKey(v []byte, sec int64) ([]byte, error) {
	held, err := decode[storedSecret](v, "epoch key")
	if err != nil {
		return nil, err
	}
	key, err := s.opts.KEK.Open(held.Sealed, epochKeyAAD(sec))
	if err != nil {
		return nil, fmt.Errorf("etcdstore: open sealed epoch key: %w", err)
	}
	if len(key) != EpochKeySize {
		return nil, errors.New("etcdstore: stored epoch key is malformed")
	}
	return key, nil
}
