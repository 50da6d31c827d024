package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/healthcode/healthcode/bundle"
)

// bundleFile is what sync writes: the signed bundle exactly as the issuer
// served it, and the pin it was accepted under. Every load opens it again
// under that pin, so an edited file is refused rather than trusted.
type bundleFile struct {
	Pin    string `json:"pin"`
	Bundle string `json:"bundle"`
}

// maxBundleFile bounds what a load reads: a signed bundle plus the pin and
// JSON quoting.
const maxBundleFile = bundle.MaxLen + 1024

// loadBundle reads path and opens the bundle in it under its pin. It does not
// judge time: the caller decides between fine, stale and expired.
func loadBundle(path string) (*bundle.Bundle, bundleFile, error) {
	var bf bundleFile
	f, err := os.Open(path)
	if err != nil {
		return nil, bf, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBundleFile+1))
	if err != nil {
		return nil, bf, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxBundleFile {
		return nil, bf, fmt.Errorf("%s is larger than %d bytes; not a bundle file", path, maxBundleFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bf); err != nil {
		return nil, bf, fmt.Errorf("%s is not a bundle file written by 'verifier sync': %v", path, err)
	}
	if dec.More() {
		return nil, bf, fmt.Errorf("%s is not a bundle file written by 'verifier sync': data after the object", path)
	}
	b, err := bundle.Open(bf.Bundle, bf.Pin)
	if err != nil {
		return nil, bf, fmt.Errorf("%s: %w", path, err)
	}
	return b, bf, nil
}

// saveBundle writes path atomically: a reader sees the old file or the new
// one, never half of either.
func saveBundle(path string, bf bundleFile) error {
	data, err := json.MarshalIndent(bf, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// isNotExist reports a missing file, however wrapped.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// clockWarning says what is wrong when now is earlier than the bundle's
// issue time by more than the policy's skew: this machine's clock is behind
// (or the issuer's ahead), and tokens will be judged on the wrong time.
func clockWarning(b *bundle.Bundle, now time.Time) (string, bool) {
	iat := time.Unix(b.IssuedAt, 0)
	if !iat.After(now.Add(b.Skew())) {
		return "", false
	}
	return fmt.Sprintf("this machine's clock (%s) is %s behind the bundle's issue time (%s), more than the allowed clock skew (%s); check the clock, or tokens will be judged on the wrong time",
		now.UTC().Format(time.RFC3339), iat.Sub(now).Truncate(time.Second), iat.UTC().Format(time.RFC3339), b.Skew()), true
}
