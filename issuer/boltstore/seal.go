package boltstore

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

// Sealing at rest (design §9, "thief of a signing key"): every private key
// in the file is sealed under Options.KEK, with an aad that names its
// record, so a copy of the data directory signs nothing and a sealed blob
// moved to another record does not open there.
var (
	// cfgKEKCheck holds a sealed constant: Open proves the KEK against it
	// before anything else, and tells a wrong KEK from a first start.
	cfgKEKCheck  = []byte("kek_check")
	kekCheckAAD  = []byte("kek check")
	kekCheckText = []byte("healthcode: the keys of this store are sealed under this KEK")
	bundleKeyAAD = []byte("bundle key")
)

func signingKeyAAD(id string) []byte { return []byte("signing key " + id) }

func (s *DB) kek() *kek.Key { return s.opts.KEK }

func (s *DB) openSigningKey(sk storedSigningKey) (ed25519.PrivateKey, error) {
	if len(sk.Sealed) == 0 {
		// Open seals plain keys before anyone reads them.
		return nil, fmt.Errorf("boltstore: signing key %s is not sealed", sk.ID)
	}
	priv, err := s.kek().Open(sk.Sealed, signingKeyAAD(sk.ID))
	if err != nil {
		return nil, fmt.Errorf("boltstore: open sealed signing key %s: %w", sk.ID, err)
	}
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("boltstore: signing key %s is malformed", sk.ID)
	}
	return priv, nil
}

// sealAtRest runs at Open. A store that holds the KEK check proves the KEK
// against it. One without (new, or written before sealing) has its plain
// keys sealed, keeping their ids and so every fingerprint and kid, and is
// compacted so the plain bytes leave the freed pages at once.
func (s *DB) sealAtRest() error {
	sealed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		cfg := bucket(tx, issuer.CategoryConfiguration)
		if v := cfg.Get(cfgKEKCheck); v != nil {
			_, payload, err := splitValue(v)
			if err != nil {
				return err
			}
			_, err = s.kek().Open(payload, kekCheckAAD)
			if errors.Is(err, kek.ErrWrongKEK) && s.opts.PreviousKEK != nil {
				// A KEK rotation: everything here is still under the previous
				// KEK (one transaction reseals it all).
				if _, perr := s.opts.PreviousKEK.Open(payload, kekCheckAAD); perr == nil {
					n, err := s.resealAll(tx, s.opts.PreviousKEK, s.kek())
					if err != nil {
						return err
					}
					sealed = n
					return s.markCompaction(tx)
				}
			}
			if err != nil {
				return fmt.Errorf("boltstore: cannot open the keys in %s: %w", s.dir, err)
			}
			return nil
		}
		n, err := s.resealAll(tx, nil, s.kek())
		if err != nil {
			return err
		}
		sealed = n
		if n > 0 {
			if err := s.markCompaction(tx); err != nil {
				return err
			}
		}
		return nil
	})
	s.resealed += sealed
	if err != nil || sealed == 0 {
		return err
	}
	s.log.Info("sealed the private keys of the store under the KEK", "keys", sealed)
	return s.compact()
}

// resealAll seals every private key in the file under to: plain ones
// (from, nil) or those sealed under from. It writes the KEK check for to
// and returns how many keys it rewrote. Values keep their write hour.
func (s *DB) resealAll(tx *bolt.Tx, from, to *kek.Key) (int, error) {
	n := 0
	keys := bucket(tx, issuer.CategorySigningKeys)
	type rec struct{ k, v []byte }
	var recs []rec
	if err := keys.ForEach(func(k, v []byte) error {
		if isWithdrawal(k) {
			return nil // no private part
		}
		recs = append(recs, rec{append([]byte(nil), k...), append([]byte(nil), v...)})
		return nil
	}); err != nil {
		return 0, err
	}
	for _, r := range recs {
		_, payload, err := splitValue(r.v)
		if err != nil {
			return 0, err
		}
		var sk storedSigningKey
		if err := json.Unmarshal(payload, &sk); err != nil {
			return 0, fmt.Errorf("boltstore: stored signing key is malformed: %w", err)
		}
		priv := sk.Private
		if from != nil {
			if priv, err = from.Open(sk.Sealed, signingKeyAAD(sk.ID)); err != nil {
				return 0, fmt.Errorf("boltstore: open sealed signing key %s: %w", sk.ID, err)
			}
		}
		if len(priv) != ed25519.PrivateKeySize {
			return 0, fmt.Errorf("boltstore: signing key %s is malformed", sk.ID)
		}
		if sk.Sealed, err = to.Seal(priv, signingKeyAAD(sk.ID)); err != nil {
			return 0, err
		}
		sk.Private = nil
		out, err := json.Marshal(sk)
		if err != nil {
			return 0, err
		}
		if err := put(tx, issuer.CategorySigningKeys, r.k, keepHour(r.v, out)); err != nil {
			return 0, err
		}
		n++
	}

	cfg := bucket(tx, issuer.CategoryConfiguration)
	if v := cfg.Get(cfgBundleKey); v != nil {
		_, payload, err := splitValue(v)
		if err != nil {
			return 0, err
		}
		priv := payload
		if from != nil {
			if priv, err = from.Open(payload, bundleKeyAAD); err != nil {
				return 0, fmt.Errorf("boltstore: open the sealed bundle key: %w", err)
			}
		}
		if len(priv) != ed25519.PrivateKeySize {
			return 0, errors.New("boltstore: stored bundle key is malformed")
		}
		out, err := to.Seal(priv, bundleKeyAAD)
		if err != nil {
			return 0, err
		}
		if err := put(tx, issuer.CategoryConfiguration, cfgBundleKey, keepHour(v, out)); err != nil {
			return 0, err
		}
		n++
	}
	check, err := to.Seal(kekCheckText, kekCheckAAD)
	if err != nil {
		return 0, err
	}
	return n, put(tx, issuer.CategoryConfiguration, cfgKEKCheck, s.value(check))
}

// keepHour is a new payload under an old value's write-hour header.
func keepHour(old, payload []byte) []byte {
	v := make([]byte, 8+len(payload))
	copy(v, old[:8])
	copy(v[8:], payload)
	return v
}

// RotateKEK reseals every private key of the store in dir (signing keys,
// the bundle key, replay partition keys), now sealed under opts.KEK, under
// newKEK, and compacts the main file so that no freed page keeps a blob
// the old KEK opens. The main file is resealed in one transaction, each
// partition key by an atomic rewrite; a rotation cut short is finished by
// running it again with the same two KEKs. The issuer must not be running
// (Open takes the data directory's lock). Afterwards only newKEK opens the
// store; backups made before stay sealed under the old one. It returns how
// many keys it resealed.
func RotateKEK(ctx context.Context, dir string, opts Options, newKEK *kek.Key) (int, error) {
	if newKEK == nil {
		return 0, errors.New("boltstore: rotate KEK: the new KEK is required")
	}
	if opts.KEK == nil {
		return 0, errors.New("boltstore: rotate KEK: the current KEK is required")
	}
	if opts.KEK.ID() == newKEK.ID() {
		return 0, fmt.Errorf("boltstore: rotate KEK: the new KEK is the current one (%s)", newKEK.ID())
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	opts.KEK, opts.PreviousKEK = newKEK, opts.KEK
	s, err := Open(dir, opts)
	if err != nil {
		return 0, fmt.Errorf("boltstore: rotate KEK: %w", err)
	}
	n := s.resealed
	return n, s.Close()
}
