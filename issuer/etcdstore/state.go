package etcdstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/issuer"
)

// Stored forms. W is the record's write hour (Unix seconds), for the
// inventory.

type storedSecret struct {
	W      int64  `json:"w"`
	Sealed []byte `json:"sealed"`
}

type storedSigningKey struct {
	W         int64     `json:"w"`
	ID        string    `json:"id"`
	Sealed    []byte    `json:"sealed"`
	Created   time.Time `json:"created"`
	ActiveAt  time.Time `json:"active_at"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DestroyAt time.Time `json:"destroy_at"`
}

type storedWithdrawal struct {
	W     int64     `json:"w"`
	ID    string    `json:"id"`
	At    time.Time `json:"at"`
	Until time.Time `json:"until"`
}

type storedSequence struct {
	W int64  `json:"w"`
	N uint64 `json:"n"`
}

type storedAttester struct {
	W      int64     `json:"w"`
	ID     string    `json:"id"`
	Public []byte    `json:"public"`
	Added  time.Time `json:"added"`
}

type storedAdminToken struct {
	W       int64     `json:"w"`
	Name    string    `json:"name"`
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
}

type storedPolicy struct {
	W       int64     `json:"w"`
	Version int       `json:"version"`
	Set     time.Time `json:"set"`
	Raw     []byte    `json:"raw"`
}

type storedAudit struct {
	W      int64     `json:"w"`
	Time   time.Time `json:"time"`
	Admin  string    `json:"admin"`
	Action string    `json:"action"`
	Detail string    `json:"detail"`
}

type storedBundle struct {
	W        int64  `json:"w"`
	Sequence uint64 `json:"sequence"`
	Raw      string `json:"raw"`
}

func decode[T any](v []byte, what string) (T, error) {
	var out T
	if err := json.Unmarshal(v, &out); err != nil {
		return out, fmt.Errorf("etcdstore: stored %s is malformed", what)
	}
	return out, nil
}

// --- signing keys -----------------------------------------------------------

// SigningKeys returns every signing key held, earliest NotBefore first.
func (s *Store) SigningKeys(ctx context.Context) ([]issuer.SigningKey, error) {
	resp, err := s.get(ctx, s.key(prefixKeys), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read signing keys: %w", err)
	}
	out := make([]issuer.SigningKey, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		sk, err := decode[storedSigningKey](kv.Value, "signing key")
		if err != nil {
			return nil, err
		}
		priv, err := s.opts.KEK.Open(sk.Sealed, signingKeyAAD(sk.ID))
		if err != nil {
			return nil, fmt.Errorf("etcdstore: open sealed signing key %s: %w", sk.ID, err)
		}
		if len(priv) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("etcdstore: signing key %s is malformed", sk.ID)
		}
		out = append(out, issuer.SigningKey{
			ID: sk.ID, Private: priv, Created: sk.Created, ActiveAt: sk.ActiveAt,
			NotBefore: sk.NotBefore, NotAfter: sk.NotAfter, DestroyAt: sk.DestroyAt,
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// keyRecords returns the keys under prefix whose name is id, with their
// ModRevisions.
func (s *Store) keyRecords(ctx context.Context, prefix, id string) (map[string]int64, error) {
	resp, err := s.get(ctx, s.key(prefix), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	found := map[string]int64{}
	for _, kv := range resp.Kvs {
		_, name, err := s.splitDeadlineKey(prefix, kv.Key)
		if err != nil {
			return nil, err
		}
		if name == id {
			found[string(kv.Key)] = kv.ModRevision
		}
	}
	return found, nil
}

// PutSigningKey stores k (private part sealed) under its DestroyAt,
// replacing a key of the same ID, in one transaction that fails over if
// the key's records changed since read.
func (s *Store) PutSigningKey(ctx context.Context, k issuer.SigningKey) error {
	if err := k.Check(); err != nil {
		return fmt.Errorf("etcdstore: %w", err)
	}
	if strings.Contains(k.ID, "/") {
		return fmt.Errorf("etcdstore: signing key %q: id must not contain \"/\"", k.ID)
	}
	deadline, err := deadlineSeconds(k.DestroyAt, "signing key "+k.ID)
	if err != nil {
		return err
	}
	sealed, err := s.opts.KEK.Seal(k.Private, signingKeyAAD(k.ID))
	if err != nil {
		return err
	}
	v, err := s.encode(storedSigningKey{
		W: s.writeHour(), ID: k.ID, Sealed: sealed, Created: k.Created, ActiveAt: k.ActiveAt,
		NotBefore: k.NotBefore, NotAfter: k.NotAfter, DestroyAt: k.DestroyAt,
	})
	if err != nil {
		return err
	}
	key := s.deadlineKey(prefixKeys, deadline, k.ID)
	return s.withLease(ctx, deadline, func(lease clientv3.LeaseID) error {
		return s.casLoop(ctx, "signing key", func() (bool, error) {
			found, err := s.keyRecords(ctx, prefixKeys, k.ID)
			if err != nil {
				return false, err
			}
			var cmps []clientv3.Cmp
			var ops []clientv3.Op
			for fk, rev := range found {
				cmps = append(cmps, unchanged(fk, rev))
				if fk != key {
					ops = append(ops, clientv3.OpDelete(fk))
				}
			}
			if _, ok := found[key]; !ok {
				cmps = append(cmps, absent(key))
			}
			ops = append(ops, clientv3.OpPut(key, v, leaseOpt(lease)...))
			r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn { return t.If(cmps...).Then(ops...) })
			if err != nil {
				return false, err
			}
			return r.Succeeded, nil
		})
	})
}

// casLoop runs attempt until it succeeds (true), fails, or has lost the
// race casAttempts times.
func (s *Store) casLoop(ctx context.Context, what string, attempt func() (bool, error)) error {
	for i := 0; i < casAttempts; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := attempt()
		if err != nil {
			return fmt.Errorf("etcdstore: write %s: %w", what, unavailable(ctx, err))
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("etcdstore: write %s: changed by others %d times in a row", what, casAttempts)
}

// WithdrawSigningKey deletes signing key w.ID and records its withdrawal
// until w.Until in one transaction; issuer.ErrNotFound if no such key is
// held. The next sweep flushes the WAL, compacts and defragments, so no
// member keeps even the sealed copy.
func (s *Store) WithdrawSigningKey(ctx context.Context, w issuer.WithdrawnKey) error {
	wk, v, deadline, err := s.withdrawal(w)
	if err != nil {
		return err
	}
	notFound := false
	err = s.withLease(ctx, deadline, func(lease clientv3.LeaseID) error {
		return s.casLoop(ctx, "key withdrawal", func() (bool, error) {
			found, err := s.keyRecords(ctx, prefixKeys, w.ID)
			if err != nil {
				return false, err
			}
			if len(found) == 0 {
				notFound = true
				return true, nil
			}
			var cmps []clientv3.Cmp
			var ops []clientv3.Op
			for fk, rev := range found {
				cmps = append(cmps, unchanged(fk, rev))
				ops = append(ops, clientv3.OpDelete(fk))
			}
			// The next sweep flushes the WAL past the sealed key's
			// entries even if it deletes nothing itself.
			ops = append(ops, clientv3.OpPut(wk, v, leaseOpt(lease)...), s.scrubPending())
			r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn { return t.If(cmps...).Then(ops...) })
			if err != nil {
				return false, err
			}
			return r.Succeeded, nil
		})
	})
	if err != nil {
		return err
	}
	if notFound {
		return issuer.ErrNotFound
	}
	return nil
}

// withdrawal is w's stored key and value, and its deadline (Until).
func (s *Store) withdrawal(w issuer.WithdrawnKey) (key, value string, deadline int64, err error) {
	if err := w.Check(); err != nil {
		return "", "", 0, fmt.Errorf("etcdstore: %w", err)
	}
	if deadline, err = deadlineSeconds(w.Until, "withdrawn key "+w.ID); err != nil {
		return "", "", 0, err
	}
	if value, err = s.encode(storedWithdrawal{W: s.writeHour(), ID: w.ID, At: w.At, Until: w.Until}); err != nil {
		return "", "", 0, err
	}
	return s.deadlineKey(prefixWithdrawn, deadline, w.ID), value, deadline, nil
}

// WithdrawnKeys returns the withdrawals held, by id.
func (s *Store) WithdrawnKeys(ctx context.Context) ([]issuer.WithdrawnKey, error) {
	resp, err := s.get(ctx, s.key(prefixWithdrawn), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read withdrawn keys: %w", err)
	}
	out := make([]issuer.WithdrawnKey, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		w, err := decode[storedWithdrawal](kv.Value, "key withdrawal")
		if err != nil {
			return nil, err
		}
		out = append(out, issuer.WithdrawnKey{ID: w.ID, At: w.At, Until: w.Until})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out, nil
}

// --- bundle key and sequence ------------------------------------------------

// BundleKey returns the bundle signing key, or issuer.ErrNotFound. The
// store remembers which one it read (see PutBundleKey).
func (s *Store) BundleKey(ctx context.Context) (ed25519.PrivateKey, error) {
	resp, err := s.get(ctx, s.key(keyBundleKey))
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read bundle key: %w", err)
	}
	if len(resp.Kvs) == 0 {
		s.sawBundleKey(0)
		return nil, issuer.ErrNotFound
	}
	sec, err := decode[storedSecret](resp.Kvs[0].Value, "bundle key")
	if err != nil {
		return nil, err
	}
	k, err := s.opts.KEK.Open(sec.Sealed, bundleKeyAAD)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: open the sealed bundle key: %w", err)
	}
	if len(k) != ed25519.PrivateKeySize {
		return nil, errors.New("etcdstore: stored bundle key is malformed")
	}
	s.sawBundleKey(resp.Kvs[0].ModRevision)
	return k, nil
}

func (s *Store) sawBundleKey(rev int64) {
	s.mu.Lock()
	s.bundleKeyRev = rev
	s.mu.Unlock()
}

// PutBundleKey stores the bundle key if the stored one is still the one
// this store last read or wrote (none, on a fresh store): a compare-and-set
// on the record. So replicas starting together end with one bundle key:
// each read none, one stores its key, and the others get
// ErrBundleKeyExists (which wraps issuer.ErrStale), read the winner's with
// BundleKey and use it. A replica never replaces a key it has not seen.
func (s *Store) PutBundleKey(ctx context.Context, k ed25519.PrivateKey) error {
	if err := issuer.CheckBundleKey(k); err != nil {
		return fmt.Errorf("etcdstore: %w", err)
	}
	sealed, err := s.opts.KEK.Seal(k, bundleKeyAAD)
	if err != nil {
		return err
	}
	v, err := s.encode(storedSecret{W: s.writeHour(), Sealed: sealed})
	if err != nil {
		return err
	}
	s.mu.Lock()
	seen := s.bundleKeyRev
	s.mu.Unlock()
	bk := s.key(keyBundleKey)
	r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn { return t.If(unchanged(bk, seen)).Then(clientv3.OpPut(bk, v)) })
	if err != nil {
		return fmt.Errorf("etcdstore: write bundle key: %w", err)
	}
	if !r.Succeeded {
		return ErrBundleKeyExists
	}
	s.sawBundleKey(r.Header.Revision)
	return nil
}

// NextBundleSequence returns a number above every one it returned before,
// on any replica: a compare-and-set on the stored last one.
func (s *Store) NextBundleSequence(ctx context.Context) (uint64, error) {
	k := s.key(keyBundleSequence)
	var next uint64
	err := s.casLoop(ctx, "bundle sequence", func() (bool, error) {
		resp, err := s.get(ctx, k)
		if err != nil {
			return false, err
		}
		next = 1
		if len(resp.Kvs) == 1 {
			seq, err := decode[storedSequence](resp.Kvs[0].Value, "bundle sequence")
			if err != nil {
				return false, err
			}
			next = seq.N + 1
		}
		v, err := s.encode(storedSequence{W: s.writeHour(), N: next})
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
	if err != nil {
		return 0, err
	}
	return next, nil
}

// --- attesters and admin tokens ---------------------------------------------

// Attesters returns the registered attesters ordered by id.
func (s *Store) Attesters(ctx context.Context) ([]issuer.Attester, error) {
	resp, err := s.get(ctx, s.key(prefixAttester), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read attesters: %w", err)
	}
	out := make([]issuer.Attester, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a, err := decode[storedAttester](kv.Value, "attester")
		if err != nil {
			return nil, err
		}
		if len(a.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("etcdstore: stored attester %q is malformed", a.ID)
		}
		out = append(out, issuer.Attester{ID: a.ID, Public: ed25519.PublicKey(a.Public), Added: a.Added})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PutAttester adds or replaces an attester.
func (s *Store) PutAttester(ctx context.Context, a issuer.Attester) error {
	if err := a.Check(); err != nil {
		return fmt.Errorf("etcdstore: %w", err)
	}
	v, err := s.encode(storedAttester{W: s.writeHour(), ID: a.ID, Public: a.Public, Added: a.Added})
	if err != nil {
		return err
	}
	return s.put(ctx, "attester", s.key(prefixAttester+a.ID), v)
}

// DeleteAttester removes an attester, or returns issuer.ErrNotFound.
func (s *Store) DeleteAttester(ctx context.Context, id string) error {
	return s.deleteOne(ctx, "attester", s.key(prefixAttester+id))
}

// AdminTokens returns the admin token hashes ordered by name.
func (s *Store) AdminTokens(ctx context.Context) ([]issuer.AdminToken, error) {
	resp, err := s.get(ctx, s.key(prefixAdminToken), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read admin tokens: %w", err)
	}
	out := make([]issuer.AdminToken, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		t, err := decode[storedAdminToken](kv.Value, "admin token")
		if err != nil {
			return nil, err
		}
		if len(t.Hash) != 32 {
			return nil, errors.New("etcdstore: stored admin token is malformed")
		}
		at := issuer.AdminToken{Name: t.Name, Created: t.Created}
		copy(at.Hash[:], t.Hash)
		out = append(out, at)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PutAdminToken adds or replaces a named admin token hash.
func (s *Store) PutAdminToken(ctx context.Context, t issuer.AdminToken) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("etcdstore: %w", err)
	}
	if t.Hash == ([32]byte{}) {
		return fmt.Errorf("etcdstore: admin token %q: hash is all zeros", t.Name)
	}
	v, err := s.encode(storedAdminToken{W: s.writeHour(), Name: t.Name, Hash: t.Hash[:], Created: t.Created})
	if err != nil {
		return err
	}
	return s.put(ctx, "admin token", s.key(prefixAdminToken+t.Name), v)
}

// DeleteAdminToken removes a named admin token, or returns issuer.ErrNotFound.
func (s *Store) DeleteAdminToken(ctx context.Context, name string) error {
	return s.deleteOne(ctx, "admin token", s.key(prefixAdminToken+name))
}

func (s *Store) put(ctx context.Context, what, k, v string, opts ...clientv3.OpOption) error {
	if s.isClosed() {
		return ErrClosed
	}
	op, cancel := s.op(ctx)
	defer cancel()
	if _, err := s.c.Put(op, k, v, opts...); err != nil {
		return fmt.Errorf("etcdstore: write %s: %w", what, unavailable(ctx, err))
	}
	return nil
}

// deleteOne deletes one key, telling from the count whether it was there.
func (s *Store) deleteOne(ctx context.Context, what, k string) error {
	if s.isClosed() {
		return ErrClosed
	}
	op, cancel := s.op(ctx)
	defer cancel()
	resp, err := s.c.Delete(op, k)
	if err != nil {
		return fmt.Errorf("etcdstore: delete %s: %w", what, unavailable(ctx, err))
	}
	if resp.Deleted == 0 {
		return issuer.ErrNotFound
	}
	return nil
}

// --- policy -----------------------------------------------------------------

func (s *Store) decodePolicy(v []byte) (issuer.PolicyRecord, error) {
	p, err := decode[storedPolicy](v, "policy")
	if err != nil {
		return issuer.PolicyRecord{}, err
	}
	return issuer.PolicyRecord{Version: p.Version, Raw: p.Raw, Set: p.Set}, nil
}

// Policy returns the current policy, or issuer.ErrNotFound.
func (s *Store) Policy(ctx context.Context) (issuer.PolicyRecord, error) {
	resp, err := s.get(ctx, s.key(keyPolicy))
	if err != nil {
		return issuer.PolicyRecord{}, fmt.Errorf("etcdstore: read policy: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return issuer.PolicyRecord{}, issuer.ErrNotFound
	}
	return s.decodePolicy(resp.Kvs[0].Value)
}

// ErrPolicyRollback is returned by PutPolicy for a version not above the
// stored one's.
var ErrPolicyRollback = errors.New("etcdstore: a policy rollback is refused")

// PutPolicy makes rec current and moves the one it replaces into policy
// history until historyDeadline, in one transaction that fails over if
// the current policy changed since read. A version not above the stored
// one's is refused with ErrPolicyRollback: the issuer checks the version
// under the schedule lock, but a replica whose lock lapsed under it (its
// session expired while it was stalled) must not roll the policy back
// for every replica that starts after it.
func (s *Store) PutPolicy(ctx context.Context, rec issuer.PolicyRecord, historyDeadline time.Time) error {
	if err := rec.Check(); err != nil {
		return fmt.Errorf("etcdstore: %w", err)
	}
	if len(rec.Raw) == 0 {
		return errors.New("etcdstore: policy: document is empty")
	}
	deadline, err := deadlineSeconds(historyDeadline, "policy history")
	if err != nil {
		return err
	}
	v, err := s.encode(storedPolicy{W: s.writeHour(), Version: rec.Version, Set: rec.Set, Raw: bytes.Clone(rec.Raw)})
	if err != nil {
		return err
	}
	pk := s.key(keyPolicy)
	return s.withLease(ctx, deadline, func(lease clientv3.LeaseID) error {
		return s.casLoop(ctx, "policy", func() (bool, error) {
			resp, err := s.get(ctx, pk)
			if err != nil {
				return false, err
			}
			ops := []clientv3.Op{clientv3.OpPut(pk, v)}
			if len(resp.Kvs) == 1 {
				held, err := s.decodePolicy(resp.Kvs[0].Value)
				if err != nil {
					return false, err
				}
				if held.Version >= rec.Version {
					return false, fmt.Errorf("version %d is stored, %d given: %w", held.Version, rec.Version, ErrPolicyRollback)
				}
				name, err := randomName()
				if err != nil {
					return false, err
				}
				// The old record keeps its own write hour.
				hk := s.deadlineKey(prefixPolicyHist, deadline, name)
				ops = append(ops, clientv3.OpPut(hk, string(resp.Kvs[0].Value), leaseOpt(lease)...))
			}
			r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
				return t.If(unchanged(pk, modRev(resp))).Then(ops...)
			})
			if err != nil {
				return false, err
			}
			return r.Succeeded, nil
		})
	})
}

// PolicyHistory returns the replaced policies still held, oldest Set first.
func (s *Store) PolicyHistory(ctx context.Context) ([]issuer.PolicyRecord, error) {
	resp, err := s.get(ctx, s.key(prefixPolicyHist), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read policy history: %w", err)
	}
	out := make([]issuer.PolicyRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		p, err := s.decodePolicy(kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Set.Before(out[j].Set) })
	return out, nil
}

// --- audit ------------------------------------------------------------------

// AppendAudit records one admin action until deadline.
func (s *Store) AppendAudit(ctx context.Context, e issuer.AuditEntry, deadline time.Time) error {
	if err := e.Check(); err != nil {
		return fmt.Errorf("etcdstore: %w", err)
	}
	sec, err := deadlineSeconds(deadline, "audit entry")
	if err != nil {
		return err
	}
	v, err := s.encode(storedAudit{W: s.writeHour(), Time: e.Time, Admin: e.Admin, Action: e.Action, Detail: e.Detail})
	if err != nil {
		return err
	}
	return s.withLease(ctx, sec, func(lease clientv3.LeaseID) error {
		return s.casLoop(ctx, "audit entry", func() (bool, error) {
			name, err := randomName()
			if err != nil {
				return false, err
			}
			k := s.deadlineKey(prefixAudit, sec, name)
			r, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
				return t.If(absent(k)).Then(clientv3.OpPut(k, v, leaseOpt(lease)...))
			})
			if err != nil {
				return false, err
			}
			return r.Succeeded, nil
		})
	})
}

// Audit returns the entries held, oldest first: by time, then by the order
// etcd took them in (their create revision), whichever replica wrote them.
func (s *Store) Audit(ctx context.Context) ([]issuer.AuditEntry, error) {
	resp, err := s.get(ctx, s.key(prefixAudit), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read audit log: %w", err)
	}
	type held struct {
		rev int64
		e   issuer.AuditEntry
	}
	hs := make([]held, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a, err := decode[storedAudit](kv.Value, "audit entry")
		if err != nil {
			return nil, err
		}
		hs = append(hs, held{kv.CreateRevision, issuer.AuditEntry{Time: a.Time, Admin: a.Admin, Action: a.Action, Detail: a.Detail}})
	}
	sort.Slice(hs, func(i, j int) bool {
		if !hs[i].e.Time.Equal(hs[j].e.Time) {
			return hs[i].e.Time.Before(hs[j].e.Time)
		}
		return hs[i].rev < hs[j].rev
	})
	out := make([]issuer.AuditEntry, len(hs))
	for i, h := range hs {
		out[i] = h.e
	}
	return out, nil
}
