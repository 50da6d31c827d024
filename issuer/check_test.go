package issuer

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// The checks every store makes before a write, message by message.
func TestRecordChecks(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	pub := priv.Public().(ed25519.PublicKey)
	now := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"signing key without id", SigningKey{Private: priv}.Check(), "signing key: id is required"},
		{"signing key, short key", SigningKey{ID: "k1", Private: priv[:31]}.Check(), `signing key "k1": private key is 31 bytes, want 64`},
		{"signing key", SigningKey{ID: "k1", Private: priv}.Check(), ""},
		{"withdrawal without id", WithdrawnKey{}.Check(), "withdrawn key: id is required"},
		{"withdrawal", WithdrawnKey{ID: "k1"}.Check(), ""},
		{"bundle key, short", CheckBundleKey(priv[:10]), "bundle key is 10 bytes, want 64"},
		{"bundle key", CheckBundleKey(priv), ""},
		{"attester without id", Attester{Public: pub}.Check(), "attester: id is required"},
		{"attester, long key", Attester{ID: "lab", Public: append(pub, 0)}.Check(), `attester "lab": public key is 33 bytes, want 32`},
		{"attester", Attester{ID: "lab", Public: pub}.Check(), ""},
		{"admin token without name", AdminToken{}.Check(), "admin token: name is required"},
		{"admin token", AdminToken{Name: "ops"}.Check(), ""},
		{"policy version 0", PolicyRecord{}.Check(), "policy: version must be at least 1, got 0"},
		{"policy", PolicyRecord{Version: 1}.Check(), ""},
		{"audit without time", AuditEntry{Action: "x"}.Check(), "audit: time is required"},
		{"audit, blank action", AuditEntry{Time: now, Action: " "}.Check(), "audit: action is required"},
		{"audit", AuditEntry{Time: now, Action: "policy.set"}.Check(), ""},
	} {
		got := ""
		if c.err != nil {
			got = c.err.Error()
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
