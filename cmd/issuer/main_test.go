package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

func runIssuer(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestPolicyDefaultAndValidate(t *testing.T) {
	code, out, _ := runIssuer(t, "policy", "default")
	if code != 0 || out != string(policy.DefaultJSON()) {
		t.Fatalf("policy default: exit %d, %d bytes", code, len(out))
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runIssuer(t, "policy", "validate", good); code != 0 || out != good+": valid policy, version 1\n" {
		t.Fatalf("validate good: exit %d, %q", code, out)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(strings.Replace(out, `"replay": "7d"`, `"replay": "1d"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runIssuer(t, "policy", "validate", bad)
	if want := "retention.replay: must be at least renewal.period (7d), got 1d"; code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("validate bad: exit %d, %q; want 1 and %q", code, errOut, want)
	}
	unknown := filepath.Join(dir, "unknown.json")
	if err := os.WriteFile(unknown, []byte(strings.Replace(out, `"version": 1,`, `"version": 1, "owner": "x",`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runIssuer(t, "policy", "validate", unknown); code != 1 || !strings.Contains(errOut, `owner`) {
		t.Fatalf("unknown field: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runIssuer(t, "policy", "validate"); code != 2 || !strings.Contains(errOut, "usage: issuer policy validate FILE") {
		t.Fatalf("no file: exit %d, %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"policy"}, "policy needs a subcommand"},
		{[]string{"policy", "delete"}, `unknown policy subcommand "delete"`},
		{[]string{"serve", "extra"}, `serve takes no arguments, got "extra"`},
		{[]string{"serve", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"serve", "--log-level", "loud"}, "--log-level: want debug, info, warn or error"},
		{[]string{"admin", "attesters"}, "admin attesters needs a subcommand"},
		{[]string{"admin", "attesters", "add", "--id", "lab"}, "attesters add needs --id and --key"},
		{[]string{"admin", "attesters", "add", "--id", "lab", "--key", "short"}, "--key:"},
		{[]string{"admin", "bogus", "x"}, `unknown admin command "bogus x"`},
		{[]string{"admin", "--url", "ftp://x", "inventory"}, "--url must be an http(s) URL"},
	} {
		code, _, errOut := runIssuer(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("issuer %q: exit %d, stderr %q; want 2 and %q", c.args, code, errOut, c.want)
		}
	}
	if code, out, _ := runIssuer(t, "help"); code != 0 || !strings.Contains(out, "issuer serve") {
		t.Fatalf("help: exit %d", code)
	}
}

// The admin CLI over a real issuer: attesters, inventory and audit, with
// flags on either side of the command and the token from the environment.
func TestAdminAttestersInventoryAudit(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	t.Setenv("HEALTHCODE_ADMIN_TOKEN", env.AdminToken)
	t.Setenv("HEALTHCODE_URL", env.URL)
	code, out, errOut := runIssuer(t, "admin", "attesters", "add", "--id", "city-lab-1", "--key", keyfile.EncodePublic(testPub(t)))
	if code != 0 || out != "attester city-lab-1 registered\n" {
		t.Fatalf("add: exit %d, %q %q", code, out, errOut)
	}
	code, out, _ = runIssuer(t, "admin", "attesters", "list")
	if code != 0 || !strings.Contains(out, "city-lab-1") || !strings.Contains(out, "test-lab") {
		t.Fatalf("list: exit %d, %q", code, out)
	}
	code, out, _ = runIssuer(t, "admin", "attesters", "remove", "city-lab-1")
	if code != 0 || out != "attester city-lab-1 removed\n" {
		t.Fatalf("remove: exit %d, %q", code, out)
	}
	code, _, errOut = runIssuer(t, "admin", "attesters", "remove", "city-lab-1")
	if code != 1 || !strings.Contains(errOut, `no attester "city-lab-1" (not_found, HTTP 404)`) {
		t.Fatalf("remove again: exit %d, %q", code, errOut)
	}
	code, out, _ = runIssuer(t, "admin", "inventory")
	if code != 0 || !strings.Contains(out, "replay_records") || !strings.Contains(out, "RETENTION") {
		t.Fatalf("inventory: exit %d, %q", code, out)
	}
	code, out, _ = runIssuer(t, "admin", "audit", "--json")
	if code != 0 || !strings.Contains(out, `"action":"attester.remove"`) || strings.Contains(out, env.AdminToken) {
		t.Fatalf("audit: exit %d, %q", code, out)
	}
}

func testPub(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
