package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

// The inventory is kept, not scanned: every write and deletion of a record
// updates, in the same transaction, its category's count and a histogram of
// write hours (whose first key is the oldest). The inventory then reads two
// keys per category, and a cursor's first key for the next deadline.
//
// Layout, in the main file and in every replay partition:
// inventory / <category> / "n" -> count, "h" || hour -> records of that hour.
var (
	inventoryBucket = []byte("inventory")
	tallyCount      = []byte("n")
	tallyHourPrefix = byte('h')
)

func tallyOf(tx *bolt.Tx, category string) (*bolt.Bucket, error) {
	inv := tx.Bucket(inventoryBucket)
	if inv == nil {
		return nil, errors.New("boltstore: inventory bucket is missing")
	}
	if tx.Writable() {
		return inv.CreateBucketIfNotExists([]byte(category))
	}
	return inv.Bucket([]byte(category)), nil
}

func hourKey(hour int64) []byte {
	k := make([]byte, 9)
	k[0] = tallyHourPrefix
	binary.BigEndian.PutUint64(k[1:], uint64(hour))
	return k
}

func addTo(b *bolt.Bucket, key []byte, delta int64) error {
	var n int64
	if v := b.Get(key); v != nil {
		if len(v) != 8 {
			return errors.New("boltstore: stored inventory count is malformed")
		}
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += delta
	if n < 0 {
		return errors.New("boltstore: inventory count would go below zero")
	}
	if n == 0 {
		return b.Delete(key)
	}
	return b.Put(key, u64(uint64(n)))
}

// tally adds delta records written in hour to a category's inventory.
func tally(b *bolt.Bucket, hour int64, delta int64) error {
	if err := addTo(b, tallyCount, delta); err != nil {
		return err
	}
	return addTo(b, hourKey(hour), delta)
}

// put writes a record of a category and keeps its inventory in step. Every
// value starts with its write hour.
func put(tx *bolt.Tx, category string, k, v []byte) error {
	b := tx.Bucket([]byte(category))
	t, err := tallyOf(tx, category)
	if err != nil {
		return err
	}
	if old := b.Get(k); old != nil {
		h, _, err := splitValue(old)
		if err != nil {
			return err
		}
		if err := tally(t, h, -1); err != nil {
			return err
		}
	}
	h, _, err := splitValue(v)
	if err != nil {
		return err
	}
	if err := b.Put(k, v); err != nil {
		return err
	}
	return tally(t, h, 1)
}

// del deletes a record of a category, if present, and keeps its inventory
// in step. It reports whether there was one.
func del(tx *bolt.Tx, category string, k []byte) (bool, error) {
	b := tx.Bucket([]byte(category))
	old := b.Get(k)
	if old == nil {
		return false, nil
	}
	h, _, err := splitValue(old)
	if err != nil {
		return false, err
	}
	t, err := tallyOf(tx, category)
	if err != nil {
		return false, err
	}
	if err := b.Delete(k); err != nil {
		return false, err
	}
	return true, tally(t, h, -1)
}

// readTally returns a category's count and oldest write hour (-1 if none).
func readTally(b *bolt.Bucket) (int, int64, error) {
	if b == nil {
		return 0, -1, nil
	}
	n := 0
	if v := b.Get(tallyCount); v != nil {
		if len(v) != 8 {
			return 0, -1, errors.New("boltstore: stored inventory count is malformed")
		}
		n = int(binary.BigEndian.Uint64(v))
	}
	oldest := int64(-1)
	if k, _ := b.Cursor().Seek([]byte{tallyHourPrefix}); k != nil && len(k) == 9 && k[0] == tallyHourPrefix {
		oldest = int64(binary.BigEndian.Uint64(k[1:]))
	}
	return n, oldest, nil
}

// buildInventory tallies the small categories once, for a main file from
// before the kept inventory (release 0). Later Opens find it built.
func buildInventory(tx *bolt.Tx) error {
	if tx.Bucket(inventoryBucket) != nil {
		return nil
	}
	if _, err := tx.CreateBucket(inventoryBucket); err != nil {
		return err
	}
	for _, name := range append(append([]string(nil), smallCategories...), issuer.CategoryConfiguration) {
		t, err := tallyOf(tx, name)
		if err != nil {
			return err
		}
		hours := map[int64]int64{}
		var n int64
		if err := tx.Bucket([]byte(name)).ForEach(func(_, v []byte) error {
			h, _, err := splitValue(v)
			if err != nil {
				return fmt.Errorf("boltstore: inventory %s: %w", name, err)
			}
			hours[h]++
			n++
			return nil
		}); err != nil {
			return err
		}
		for h, c := range hours {
			if err := addTo(t, hourKey(h), c); err != nil {
				return err
			}
		}
		if err := addTo(t, tallyCount, n); err != nil {
			return err
		}
	}
	return nil
}

// Inventory reports, per category, how many records are held, the earliest
// write hour among them and the next deadline, from the kept tallies: its
// cost does not grow with the records held. For replay records the next
// deadline is the end of the earliest live partition, when they are
// deleted; a record counts as redeemable only until its own deadline.
func (s *DB) Inventory(ctx context.Context) ([]issuer.CategoryStat, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	replay := issuer.CategoryStat{Name: issuer.CategoryReplay}
	oldest := int64(-1)
	parts := s.partitions()
	for _, p := range parts {
		if !p.acquire() {
			continue // being dropped
		}
		err := p.db.View(func(tx *bolt.Tx) error {
			t, err := tallyOf(tx, issuer.CategoryReplay)
			if err != nil {
				return err
			}
			n, o, err := readTally(t)
			if err != nil || n == 0 {
				return err
			}
			replay.Count += n
			if oldest < 0 || o < oldest {
				oldest = o
			}
			if replay.NextDeadline == nil {
				next := time.Unix(p.end, 0).UTC()
				replay.NextDeadline = &next
			}
			return nil
		})
		p.release()
		if err != nil {
			return nil, fmt.Errorf("boltstore: inventory of replay partition %d: %w", p.end, err)
		}
	}
	if oldest >= 0 {
		o := time.Unix(oldest, 0).UTC()
		replay.Oldest = &o
	}
	out := []issuer.CategoryStat{replay}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		for _, name := range append(append([]string(nil), smallCategories...), issuer.CategoryConfiguration) {
			st := issuer.CategoryStat{Name: name}
			t, err := tallyOf(tx, name)
			if err != nil {
				return err
			}
			n, o, err := readTally(t)
			if err != nil {
				return fmt.Errorf("boltstore: inventory %s: %w", name, err)
			}
			st.Count = n
			if o >= 0 {
				ot := time.Unix(o, 0).UTC()
				st.Oldest = &ot
			}
			if name != issuer.CategoryConfiguration {
				if k, _ := tx.Bucket([]byte(name)).Cursor().First(); k != nil {
					next := time.Unix(keyDeadline(k), 0).UTC()
					st.NextDeadline = &next
				}
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
