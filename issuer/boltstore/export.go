package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

// Reads for 'issuer migrate', which copies a bbolt issuer's configuration
// to a cluster's shared state: what the store interfaces give only in a
// form that would lose something (the sequence without taking a number,
// the audit log with each entry's deadline).

// BundleSequence returns the last bundle sequence number handed out (0 if
// none), without taking one.
func (s *DB) BundleSequence(ctx context.Context) (uint64, error) {
	var seq uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := bucket(tx, issuer.CategoryConfiguration).Get(cfgBundleSequence)
		if v == nil {
			return nil
		}
		_, payload, err := splitValue(v)
		if err != nil || len(payload) != 8 {
			return errors.New("boltstore: stored bundle sequence is malformed")
		}
		seq = binary.BigEndian.Uint64(payload)
		return nil
	})
	return seq, err
}

// AuditRecord is an audit entry and the deadline it is held until.
type AuditRecord struct {
	Entry    issuer.AuditEntry
	Deadline time.Time
}

// AuditRecords returns the audit entries held with their deadlines, in
// Audit's order (oldest first).
func (s *DB) AuditRecords(ctx context.Context) ([]AuditRecord, error) {
	type held struct {
		storedAudit
		deadline int64
	}
	var all []held
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return bucket(tx, issuer.CategoryAudit).ForEach(func(k, v []byte) error {
			_, payload, err := splitValue(v)
			if err != nil {
				return err
			}
			var a storedAudit
			if err := json.Unmarshal(payload, &a); err != nil {
				return fmt.Errorf("boltstore: stored audit entry is malformed: %w", err)
			}
			all = append(all, held{a, keyDeadline(k)})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].Entry.Time.Equal(all[j].Entry.Time) {
			return all[i].Entry.Time.Before(all[j].Entry.Time)
		}
		return all[i].Seq < all[j].Seq
	})
	out := make([]AuditRecord, len(all))
	for i, a := range all {
		out[i] = AuditRecord{Entry: issuer.AuditEntry(a.Entry), Deadline: time.Unix(a.deadline, 0).UTC()}
	}
	return out, nil
}
