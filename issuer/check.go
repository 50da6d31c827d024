package issuer

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
)

// What every store refuses before it writes a record, the same for each
// adapter (each prefixes the error with its name): the rules live once,
// here, beside the types.

// Check refuses a signing key without an id or a whole Ed25519 key.
func (k SigningKey) Check() error {
	if k.ID == "" {
		return errors.New("signing key: id is required")
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("signing key %q: private key is %d bytes, want %d", k.ID, len(k.Private), ed25519.PrivateKeySize)
	}
	return nil
}

// Check refuses a withdrawal without a key id.
func (w WithdrawnKey) Check() error {
	if w.ID == "" {
		return errors.New("withdrawn key: id is required")
	}
	return nil
}

// CheckBundleKey refuses anything but a whole Ed25519 private key.
func CheckBundleKey(k ed25519.PrivateKey) error {
	if len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("bundle key is %d bytes, want %d", len(k), ed25519.PrivateKeySize)
	}
	return nil
}

// Check refuses an attester without an id or a whole Ed25519 public key.
func (a Attester) Check() error {
	if a.ID == "" {
		return errors.New("attester: id is required")
	}
	if len(a.Public) != ed25519.PublicKeySize {
		return fmt.Errorf("attester %q: public key is %d bytes, want %d", a.ID, len(a.Public), ed25519.PublicKeySize)
	}
	return nil
}

// Check refuses an admin token without a name.
func (t AdminToken) Check() error {
	if t.Name == "" {
		return errors.New("admin token: name is required")
	}
	return nil
}

// Check refuses a policy record below version 1.
func (r PolicyRecord) Check() error {
	if r.Version < 1 {
		return fmt.Errorf("policy: version must be at least 1, got %d", r.Version)
	}
	return nil
}

// Check refuses an audit entry without a time or an action.
func (e AuditEntry) Check() error {
	if e.Time.IsZero() {
		return errors.New("audit: time is required")
	}
	if strings.TrimSpace(e.Action) == "" {
		return errors.New("audit: action is required")
	}
	return nil
}
