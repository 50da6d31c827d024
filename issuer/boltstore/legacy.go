package boltstore

import (
	"bytes"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

// legacyReplayKeySize is a release-0 replay record key: deadline (8) ||
// recordHash (16), in the category bucket alone, its value the write hour.
const legacyReplayKeySize = 8 + replayHashSize

// migrateLegacyReplay moves release-0 replay records into today's layout,
// once, at Open: each is found by (attester, id) in replayIDBucket under the
// epoch of its deadline (the same epoch key and hash construction release 0
// used), with no secret, so the attestation it names stays redeemed until
// that deadline instead of redeeming a second time after the upgrade.
func (s *DB) migrateLegacyReplay() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		idx := tx.Bucket([]byte(issuer.CategoryReplay))
		ids := tx.Bucket(replayIDBucket)
		type legacy struct {
			key  []byte
			hour int64
		}
		var found []legacy
		c := idx.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != legacyReplayKeySize {
				continue
			}
			var hour int64
			if len(v) >= 8 {
				hour = int64(binary.BigEndian.Uint64(v))
			}
			found = append(found, legacy{bytes.Clone(k), hour}) // never delete under the cursor
		}
		for _, l := range found {
			deadline := keyDeadline(l.key)
			idk := idKey(s.epochOf(deadline), l.key[8:])
			if ids.Get(idk) == nil {
				if err := ids.Put(idk, record{hour: l.hour, deadline: deadline}.encode()); err != nil {
					return err
				}
			}
			if err := idx.Delete(l.key); err != nil {
				return err
			}
			if err := idx.Put(deadlineKey(deadline, idk), u64(uint64(l.hour))); err != nil {
				return err
			}
		}
		return nil
	})
}
