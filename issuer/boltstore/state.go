package boltstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

func bucket(tx *bolt.Tx, name string) *bolt.Bucket { return tx.Bucket([]byte(name)) }

// storedSigningKey is the JSON form of issuer.SigningKey. The private key
// is sealed under the KEK (Sealed); Private is only read, from a data
// directory written before sealing, and Open seals it at once.
type storedSigningKey struct {
	ID        string    `json:"id"`
	Private   []byte    `json:"private,omitempty"`
	Sealed    []byte    `json:"sealed,omitempty"`
	Created   time.Time `json:"created"`
	ActiveAt  time.Time `json:"active_at"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DestroyAt time.Time `json:"destroy_at"`
}

// SigningKeys returns every signing key held, earliest NotBefore first.
func (s *DB) SigningKeys(ctx context.Context) ([]issuer.SigningKey, error) {
	var out []issuer.SigningKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return bucket(tx, issuer.CategorySigningKeys).ForEach(func(k, v []byte) error {
			if isWithdrawal(k) {
				return nil
			}
			_, payload, err := splitValue(v)
			if err != nil {
				return err
			}
			var sk storedSigningKey
			if err := json.Unmarshal(payload, &sk); err != nil {
				return fmt.Errorf("boltstore: stored signing key is malformed: %w", err)
			}
			priv, err := s.openSigningKey(sk)
			if err != nil {
				return err
			}
			out = append(out, issuer.SigningKey{
				ID: sk.ID, Private: priv, Created: sk.Created, ActiveAt: sk.ActiveAt,
				NotBefore: sk.NotBefore, NotAfter: sk.NotAfter, DestroyAt: sk.DestroyAt,
			})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// PutSigningKey stores k under DestroyAt || ID, replacing a key of the same ID.
func (s *DB) PutSigningKey(ctx context.Context, k issuer.SigningKey) error {
	if err := k.Check(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	deadline, err := deadlineSeconds(k.DestroyAt, "signing key "+k.ID)
	if err != nil {
		return err
	}
	sealed, err := s.kek().Seal(k.Private, signingKeyAAD(k.ID))
	if err != nil {
		return err
	}
	payload, err := json.Marshal(storedSigningKey{
		ID: k.ID, Sealed: sealed, Created: k.Created, ActiveAt: k.ActiveAt,
		NotBefore: k.NotBefore, NotAfter: k.NotAfter, DestroyAt: k.DestroyAt,
	})
	if err != nil {
		return err
	}
	key := deadlineKey(deadline, []byte(k.ID))
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategorySigningKeys)
		var stale [][]byte
		c := b.Cursor()
		for ck, _ := c.First(); ck != nil; ck, _ = c.Next() {
			if string(ck[8:]) == k.ID && !bytes.Equal(ck, key) {
				stale = append(stale, bytes.Clone(ck))
			}
		}
		for _, ck := range stale {
			if _, err := del(tx, issuer.CategorySigningKeys, ck); err != nil {
				return err
			}
		}
		return put(tx, issuer.CategorySigningKeys, key, s.value(payload))
	})
}

// withdrawnPrefix starts the suffix of a withdrawal record in the signing
// keys bucket (deadline || "withdrawn/" || id): it lives until the key's
// naf, like the key's place in the bundle.
const withdrawnPrefix = "withdrawn/"

func isWithdrawal(k []byte) bool {
	return len(k) > 8 && bytes.HasPrefix(k[8:], []byte(withdrawnPrefix))
}

type storedWithdrawal struct {
	ID    string    `json:"id"`
	At    time.Time `json:"at"`
	Until time.Time `json:"until"`
}

// WithdrawSigningKey deletes the signing key w.ID at once (its private
// part must not wait for its deadline) and records the withdrawal until
// w.Until, in one transaction; or returns issuer.ErrNotFound. The next
// sweep compacts, so no freed page keeps even the sealed copy.
func (s *DB) WithdrawSigningKey(ctx context.Context, w issuer.WithdrawnKey) error {
	if err := w.Check(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	deadline, err := deadlineSeconds(w.Until, "withdrawn key "+w.ID)
	if err != nil {
		return err
	}
	payload, err := json.Marshal(storedWithdrawal(w))
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategorySigningKeys)
		var found [][]byte
		c := b.Cursor()
		for ck, _ := c.First(); ck != nil; ck, _ = c.Next() {
			if len(ck) > 8 && string(ck[8:]) == w.ID {
				found = append(found, bytes.Clone(ck))
			}
		}
		if len(found) == 0 {
			return issuer.ErrNotFound
		}
		for _, ck := range found {
			if _, err := del(tx, issuer.CategorySigningKeys, ck); err != nil {
				return err
			}
		}
		if err := put(tx, issuer.CategorySigningKeys, deadlineKey(deadline, []byte(withdrawnPrefix+w.ID)), s.value(payload)); err != nil {
			return err
		}
		return s.markCompaction(tx)
	})
}

// WithdrawnKeys returns the withdrawals held, by id.
func (s *DB) WithdrawnKeys(ctx context.Context) ([]issuer.WithdrawnKey, error) {
	var out []issuer.WithdrawnKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return bucket(tx, issuer.CategorySigningKeys).ForEach(func(k, v []byte) error {
			if !isWithdrawal(k) {
				return nil
			}
			_, payload, err := splitValue(v)
			if err != nil {
				return err
			}
			var w storedWithdrawal
			if err := json.Unmarshal(payload, &w); err != nil {
				return fmt.Errorf("boltstore: stored key withdrawal is malformed: %w", err)
			}
			out = append(out, issuer.WithdrawnKey(w))
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out, err
}

// BundleKey returns the bundle signing key, or issuer.ErrNotFound.
func (s *DB) BundleKey(ctx context.Context) (ed25519.PrivateKey, error) {
	var out ed25519.PrivateKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := bucket(tx, issuer.CategoryConfiguration).Get(cfgBundleKey)
		if v == nil {
			return issuer.ErrNotFound
		}
		_, payload, err := splitValue(v)
		if err != nil {
			return err
		}
		k, err := s.kek().Open(payload, bundleKeyAAD)
		if err != nil {
			return fmt.Errorf("boltstore: open the sealed bundle key: %w", err)
		}
		if len(k) != ed25519.PrivateKeySize {
			return errors.New("boltstore: stored bundle key is malformed")
		}
		out = k
		return nil
	})
	return out, err
}

// PutBundleKey replaces the bundle signing key.
func (s *DB) PutBundleKey(ctx context.Context, k ed25519.PrivateKey) error {
	if err := issuer.CheckBundleKey(k); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	sealed, err := s.kek().Seal(k, bundleKeyAAD)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategoryConfiguration)
		if b.Get(cfgBundleKey) != nil {
			// The old private key sits in a freed page until compacted.
			if err := s.markCompaction(tx); err != nil {
				return err
			}
		}
		return put(tx, issuer.CategoryConfiguration, cfgBundleKey, s.value(sealed))
	})
}

// NextBundleSequence returns 1, 2, 3, ... durably: a number is never handed
// out twice, even across a crash.
func (s *DB) NextBundleSequence(ctx context.Context) (uint64, error) {
	var next uint64
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategoryConfiguration)
		next = 1
		if v := b.Get(cfgBundleSequence); v != nil {
			_, payload, err := splitValue(v)
			if err != nil || len(payload) != 8 {
				return errors.New("boltstore: stored bundle sequence is malformed")
			}
			next = binary.BigEndian.Uint64(payload) + 1
		}
		return put(tx, issuer.CategoryConfiguration, cfgBundleSequence, s.value(u64(next)))
	})
	if err != nil {
		return 0, err
	}
	return next, nil
}

type storedAttester struct {
	ID     string    `json:"id"`
	Public []byte    `json:"public"`
	Added  time.Time `json:"added"`
}

// Attesters returns the registered attesters ordered by id.
func (s *DB) Attesters(ctx context.Context) ([]issuer.Attester, error) {
	var out []issuer.Attester
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return forEachPrefix(bucket(tx, issuer.CategoryConfiguration), cfgAttesterPrefix, func(payload []byte) error {
			var a storedAttester
			if err := json.Unmarshal(payload, &a); err != nil {
				return fmt.Errorf("boltstore: stored attester is malformed: %w", err)
			}
			out = append(out, issuer.Attester{ID: a.ID, Public: ed25519.PublicKey(a.Public), Added: a.Added})
			return nil
		})
	})
	return out, err
}

// PutAttester adds or replaces an attester.
func (s *DB) PutAttester(ctx context.Context, a issuer.Attester) error {
	if err := a.Check(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	payload, err := json.Marshal(storedAttester{ID: a.ID, Public: a.Public, Added: a.Added})
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		return put(tx, issuer.CategoryConfiguration, []byte(cfgAttesterPrefix+a.ID), s.value(payload))
	})
}

// DeleteAttester removes an attester, or returns issuer.ErrNotFound.
func (s *DB) DeleteAttester(ctx context.Context, id string) error {
	return s.deleteConfig(ctx, cfgAttesterPrefix+id)
}

type storedAdminToken struct {
	Name    string    `json:"name"`
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
}

// AdminTokens returns the admin token hashes ordered by name.
func (s *DB) AdminTokens(ctx context.Context) ([]issuer.AdminToken, error) {
	var out []issuer.AdminToken
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return forEachPrefix(bucket(tx, issuer.CategoryConfiguration), cfgAdminTokenPrefix, func(payload []byte) error {
			var t storedAdminToken
			if err := json.Unmarshal(payload, &t); err != nil || len(t.Hash) != 32 {
				return errors.New("boltstore: stored admin token is malformed")
			}
			at := issuer.AdminToken{Name: t.Name, Created: t.Created}
			copy(at.Hash[:], t.Hash)
			out = append(out, at)
			return nil
		})
	})
	return out, err
}

// PutAdminToken adds or replaces a named admin token hash.
func (s *DB) PutAdminToken(ctx context.Context, t issuer.AdminToken) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	if t.Hash == ([32]byte{}) {
		return fmt.Errorf("boltstore: admin token %q: hash is all zeros", t.Name)
	}
	payload, err := json.Marshal(storedAdminToken{Name: t.Name, Hash: t.Hash[:], Created: t.Created})
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		return put(tx, issuer.CategoryConfiguration, []byte(cfgAdminTokenPrefix+t.Name), s.value(payload))
	})
}

// DeleteAdminToken removes a named admin token, or returns issuer.ErrNotFound.
func (s *DB) DeleteAdminToken(ctx context.Context, name string) error {
	return s.deleteConfig(ctx, cfgAdminTokenPrefix+name)
}

func (s *DB) deleteConfig(ctx context.Context, key string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategoryConfiguration)
		if b.Get([]byte(key)) == nil {
			return issuer.ErrNotFound
		}
		if _, err := del(tx, issuer.CategoryConfiguration, []byte(key)); err != nil {
			return err
		}
		return s.markCompaction(tx)
	})
}

// markCompaction asks the next sweep to compact even if nothing falls due:
// a deleted or replaced record stays in a freed page until then.
func (s *DB) markCompaction(tx *bolt.Tx) error {
	return put(tx, issuer.CategoryConfiguration, cfgCompactionPending, s.value(nil))
}

func forEachPrefix(b *bolt.Bucket, prefix string, fn func(payload []byte) error) error {
	c := b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		_, payload, err := splitValue(v)
		if err != nil {
			return err
		}
		if err := fn(payload); err != nil {
			return err
		}
	}
	return nil
}

// encodePolicy stores the document as it is (not base64): version (8 bytes)
// || length of Set (1 byte) || Set (time.MarshalBinary) || Raw.
func encodePolicy(rec issuer.PolicyRecord) ([]byte, error) {
	set, err := rec.Set.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("boltstore: policy: set time: %w", err)
	}
	out := binary.BigEndian.AppendUint64(nil, uint64(rec.Version))
	out = append(out, byte(len(set)))
	out = append(out, set...)
	return append(out, rec.Raw...), nil
}

func decodePolicy(v []byte) (issuer.PolicyRecord, error) {
	bad := errors.New("boltstore: stored policy is malformed")
	_, payload, err := splitValue(v)
	if err != nil {
		return issuer.PolicyRecord{}, err
	}
	if len(payload) < 9 || len(payload) < 9+int(payload[8]) {
		return issuer.PolicyRecord{}, bad
	}
	n := int(payload[8])
	var rec issuer.PolicyRecord
	rec.Version = int(binary.BigEndian.Uint64(payload))
	if err := rec.Set.UnmarshalBinary(payload[9 : 9+n]); err != nil {
		return issuer.PolicyRecord{}, bad
	}
	rec.Raw = bytes.Clone(payload[9+n:])
	return rec, nil
}

// Policy returns the current policy, or issuer.ErrNotFound.
func (s *DB) Policy(ctx context.Context) (issuer.PolicyRecord, error) {
	var out issuer.PolicyRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := bucket(tx, issuer.CategoryConfiguration).Get(cfgPolicy)
		if v == nil {
			return issuer.ErrNotFound
		}
		var err error
		out, err = decodePolicy(v)
		return err
	})
	return out, err
}

// PutPolicy makes rec current and moves the one it replaces into policy
// history until historyDeadline, in one transaction.
func (s *DB) PutPolicy(ctx context.Context, rec issuer.PolicyRecord, historyDeadline time.Time) error {
	if err := rec.Check(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	if len(rec.Raw) == 0 {
		return errors.New("boltstore: policy: document is empty")
	}
	deadline, err := deadlineSeconds(historyDeadline, "policy history")
	if err != nil {
		return err
	}
	payload, err := encodePolicy(rec)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		cfg := bucket(tx, issuer.CategoryConfiguration)
		if old := cfg.Get(cfgPolicy); old != nil {
			h := bucket(tx, issuer.CategoryPolicyHistory)
			seq, err := h.NextSequence()
			if err != nil {
				return err
			}
			// The old record keeps its own write hour.
			if err := put(tx, issuer.CategoryPolicyHistory, deadlineKey(deadline, u64(seq)), bytes.Clone(old)); err != nil {
				return err
			}
		}
		return put(tx, issuer.CategoryConfiguration, cfgPolicy, s.value(payload))
	})
}

// PolicyHistory returns the replaced policies still held, oldest Set first.
func (s *DB) PolicyHistory(ctx context.Context) ([]issuer.PolicyRecord, error) {
	var out []issuer.PolicyRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return bucket(tx, issuer.CategoryPolicyHistory).ForEach(func(_, v []byte) error {
			p, err := decodePolicy(v)
			if err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Set.Before(out[j].Set) })
	return out, err
}

type storedAudit struct {
	Seq   uint64           `json:"seq"`
	Entry storedAuditEntry `json:"entry"`
}

// storedAuditEntry is an issuer.AuditEntry as this store writes it; its
// names are the on-disk format, which older data directories hold.
type storedAuditEntry struct {
	Time   time.Time `json:"time"`
	Admin  string    `json:"admin"`
	Action string    `json:"action"`
	Detail string    `json:"detail"`
}

// AppendAudit records one admin action until deadline.
func (s *DB) AppendAudit(ctx context.Context, e issuer.AuditEntry, deadline time.Time) error {
	if err := e.Check(); err != nil {
		return fmt.Errorf("boltstore: %w", err)
	}
	sec, err := deadlineSeconds(deadline, "audit entry")
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := bucket(tx, issuer.CategoryAudit)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		payload, err := json.Marshal(storedAudit{Seq: seq, Entry: storedAuditEntry(e)})
		if err != nil {
			return err
		}
		return put(tx, issuer.CategoryAudit, deadlineKey(sec, u64(seq)), s.value(payload))
	})
}

// Audit returns the entries held, oldest first (by time, then by append
// order; keys are ordered by deadline, which a retention change reorders).
func (s *DB) Audit(ctx context.Context) ([]issuer.AuditEntry, error) {
	recs, err := s.AuditRecords(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]issuer.AuditEntry, len(recs))
	for i, r := range recs {
		out[i] = r.Entry
	}
	return out, nil
}
