package redisstore

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

// memEpochKeys is an in-memory EpochKeys for this package's tests: a
// random key per epoch end, made on first use. Production uses
// issuer/etcdstore's, which every replica shares and whose sweep deletes
// a key once its epoch has ended.
type memEpochKeys struct {
	mu   sync.Mutex
	keys map[int64][]byte
}

func newEpochKeys() *memEpochKeys { return &memEpochKeys{keys: map[int64][]byte{}} }

func (m *memEpochKeys) EpochKey(ctx context.Context, end time.Time) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[end.Unix()]
	if !ok {
		k = make([]byte, epochKeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		m.keys[end.Unix()] = k
	}
	return k, nil
}

// testKeys is the tests' EpochKeys where one store's keys need not be
// another's.
var testKeys = newEpochKeys()

// recordKeyOf is the record key the store files rk under.
func recordKeyOf(t testing.TB, s *Store, rk issuer.ReplayKey) string {
	t.Helper()
	end := s.epochEnd(rk)
	ek, err := s.epochKey(context.Background(), end, s.opts.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s.recordKey(ek, end, rk.Attester, rk.ID)
}
