// Package forensic searches a data directory the way a thief holding a
// copy of the disk would: every byte of every file, for byte strings that
// must be gone after their deadline (invariant 5). Tests only.
package forensic

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// Pattern is a byte string that must not be found, and what it is.
type Pattern struct {
	What  string
	Bytes []byte
}

// Files reads every file under dir, by path. A file that vanishes between
// the listing and its read (a running server purging or renaming it, as
// etcd does its WAL segments) holds nothing and is left out.
func Files(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil && path != dir && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out[path] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Hits lists "what in file" for every pattern found anywhere under dir.
func Hits(t testing.TB, dir string, ps []Pattern) []string {
	t.Helper()
	return Find(Files(t, dir), ps)
}

// Find lists "what in file" for every pattern found in files (as Files
// reads them).
func Find(files map[string][]byte, ps []Pattern) []string {
	var found []string
	for path, b := range files {
		for _, p := range ps {
			if len(p.Bytes) > 0 && bytes.Contains(b, p.Bytes) {
				found = append(found, fmt.Sprintf("%s in %s", p.What, filepath.Base(path)))
			}
		}
	}
	return found
}

// Redemption is what a redemption of the attestation att (its id id),
// made with the wallet secret secret, must leave nowhere once its replay
// record is past its deadline: the id, the attestation, its signature,
// the secret, and their SHA-256 raw and in hex (a store keeps at most a
// keyed hash of each).
func Redemption(id, att string, secret []byte) []Pattern {
	secretSum := sha256.Sum256(secret)
	attSum := sha256.Sum256([]byte(att))
	idSum := sha256.Sum256([]byte(id))
	return []Pattern{
		{"secret " + id, secret},
		{"base64url secret " + id, []byte(base64.RawURLEncoding.EncodeToString(secret))},
		{"sha256(secret) " + id, secretSum[:]},
		{"sha256(secret)[:16] " + id, secretSum[:16]},
		{"hex sha256(secret) " + id, []byte(hex.EncodeToString(secretSum[:]))},
		{"id " + id, []byte(id)},
		{"attestation " + id, []byte(att)},
		{"attestation signature " + id, []byte(att[len(att)-40:])},
		{"sha256(attestation) " + id, attSum[:]},
		{"hex sha256(attestation) " + id, []byte(hex.EncodeToString(attSum[:]))},
		{"sha256(id) " + id, idSum[:]},
		{"hex sha256(id) " + id, []byte(hex.EncodeToString(idSum[:]))},
	}
}
