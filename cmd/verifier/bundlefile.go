package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/atomicfile"
)

// The bundle file holds the signed bundle exactly as the issuer served it,
// and nothing else: it is checked on every load under the pin from the
// verifier's configuration (config.go), never under anything the file
// says. Files written by earlier releases, a JSON object {"pin","bundle"},
// are still read; their pin is ignored.
type legacyBundleFile struct {
	Pin    string `json:"pin"`
	Bundle string `json:"bundle"`
}

// maxBundleFile bounds what a load reads: a signed bundle plus, in the
// legacy form, the pin and JSON quoting.
const maxBundleFile = bundle.MaxLen + 1024

// loadBundle reads path and opens the bundle in it under t's pin, refusing a
// sequence below t's floor. It returns the signed text too, for the kiosk
// page. It does not judge time: the caller decides between fine, stale and
// expired.
func loadBundle(path string, t trust) (*bundle.Bundle, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBundleFile+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxBundleFile {
		return nil, "", fmt.Errorf("%s is larger than %d bytes; not a bundle file", path, maxBundleFile)
	}
	raw := string(bytes.TrimSpace(data))
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		var lf legacyBundleFile
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&lf); err != nil {
			return nil, "", fmt.Errorf("%s is not a bundle file written by 'verifier sync': %v", path, err)
		}
		if dec.More() {
			return nil, "", fmt.Errorf("%s is not a bundle file written by 'verifier sync': data after the object", path)
		}
		raw = lf.Bundle
	}
	b, err := bundle.Open(raw, t.pin)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if b.Sequence < t.floor {
		return nil, "", fmt.Errorf("%s: %w: sequence %d, and this verifier has accepted %d; run 'verifier sync'",
			path, bundle.ErrRollback, b.Sequence, t.floor)
	}
	return b, raw, nil
}

// saveBundle replaces path with the signed bundle, atomically.
func saveBundle(path, raw string) error {
	return atomicfile.Write(path, []byte(raw+"\n"), 0o644)
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
