package boltstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

const lockName = "lock"

// lockDir takes the data directory's lock file for the life of the store:
// one issuer per data directory. Compaction reopens bbolt files (and with
// them bbolt's own per-file lock); this lock is held across it and dropped
// only by Close or the process's exit, which the kernel handles even after
// SIGKILL.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("boltstore: open lock file: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("boltstore: data directory %s is in use: another issuer holds it (lock file %s)", dir, path)
		}
		return nil, fmt.Errorf("boltstore: lock data directory %s: %w", dir, err)
	}
	return f, nil
}
