// Package forensic searches a data directory the way a thief holding a
// copy of the disk would: every byte of every file, for byte strings that
// must be gone after their deadline (invariant 5). Tests only.
package forensic

import (
	"bytes"
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
	var found []string
	for path, b := range Files(t, dir) {
		for _, p := range ps {
			if len(p.Bytes) > 0 && bytes.Contains(b, p.Bytes) {
				found = append(found, fmt.Sprintf("%s in %s", p.What, filepath.Base(path)))
			}
		}
	}
	return found
}
