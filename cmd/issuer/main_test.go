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

// Every usage error names what is wrong, exactly, with exit 2; an unknown
// command or subcommand is called unknown at its own level.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "issuer: unknown command \"frobnicate\"\nrun 'issuer help' for the commands\n"},
		{[]string{"help", "frobnicate"}, "issuer help: unknown command \"frobnicate\"\nrun 'issuer help' for the commands\n"},
		{[]string{"policy"}, "issuer: policy needs a command: default or validate FILE\n(run 'issuer help' for usage)\n"},
		{[]string{"policy", "delete"}, "issuer policy: unknown command \"delete\" (want default or validate FILE)\nrun 'issuer policy help' for usage\n"},
		{[]string{"serve", "extra"}, "issuer: serve takes no arguments, got \"extra\"\n(run 'issuer help' for usage)\n"},
		{[]string{"serve", "--nope"}, "issuer: unknown flag --nope\n(run 'issuer help' for usage)\n"},
		{[]string{"serve", "--tls-cert", "c.pem"}, "issuer: --tls-cert and --tls-key go together\n(run 'issuer help' for usage)\n"},
		{[]string{"serve", "--log-level", "loud"}, "issuer: --log-level: want debug, info, warn or error\n(run 'issuer help' for usage)\n"},
		{[]string{"admin", "inventry"}, "issuer admin: unknown command \"inventry\"\nrun 'issuer admin help' for usage\n"},
		{[]string{"admin", "bogus", "x"}, "issuer admin: unknown command \"bogus\"\nrun 'issuer admin help' for usage\n"},
		{[]string{"admin", "attesters"}, "issuer admin: attesters needs a command: list, add, remove\nrun 'issuer admin help' for usage\n"},
		{[]string{"admin", "attesters", "lst"}, "issuer admin attesters: unknown command \"lst\" (want list, add, remove)\nrun 'issuer admin attesters help' for usage\n"},
		{[]string{"admin", "attesters", "add", "--id", "lab"}, "issuer: attesters add needs --id and --key\n(run 'issuer help' for usage)\n"},
		{[]string{"admin", "--nope", "inventory"}, "issuer admin: unknown flag --nope\nrun 'issuer admin help' for usage\n"},
		{[]string{"admin", "--url", "ftp://x", "inventory"}, "issuer: --url must be an http(s) URL, got \"ftp://x\"\n(run 'issuer help' for usage)\n"},
	} {
		code, _, errOut := runIssuer(t, c.args...)
		if code != 2 || errOut != c.want {
			t.Errorf("issuer %q: exit %d, stderr\n%q\nwant 2 and\n%q", c.args, code, errOut, c.want)
		}
	}
}

// 'issuer help COMMAND' and 'issuer COMMAND --help' print that command's
// help, on stdout with exit 0, with flags spelled --name as everywhere else.
func TestHelpPerCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string // lines it must hold
	}{
		{[]string{"help"}, []string{"  issuer serve [--data DIR]", "  issuer --version"}},
		{[]string{"--help"}, []string{"  issuer serve [--data DIR]"}},
		{[]string{"help", "serve"}, []string{"Usage: issuer serve [--data DIR]", "  --data DIR ", "  --addr HOST:PORT ", "  --demo ", "(default ./data)"}},
		{[]string{"serve", "--help"}, []string{"Usage: issuer serve [--data DIR]", "  --redeem-rate N ", "issuer serve --etcd ENDPOINTS --redis ADDRS --kek FILE",
			"  --etcd ENDPOINTS ", "  --redis ADDRS ", "  --etcd-password-file FILE ", "  --redis-wait N ", "  --replica-id ID "}},
		{[]string{"serve", "-h"}, []string{"Usage: issuer serve [--data DIR]"}},
		{[]string{"help", "fingerprint"}, []string{"Usage: issuer fingerprint", "  --data DIR ", "  --qr FILE.png "}},
		{[]string{"help", "policy"}, []string{"  issuer policy validate FILE"}},
		{[]string{"help", "admin"}, []string{"  issuer admin inventory", "HEALTHCODE_ADMIN_TOKEN_FILE"}},
		{[]string{"admin", "attesters", "--help"}, []string{"  issuer admin attesters add --id ID --key PUBKEY"}},
		{[]string{"admin", "attesters", "add", "--help"}, []string{"Usage: issuer admin attesters add --id ID --key PUBKEY", "  --id ID ", "  --token-file FILE "}},
	} {
		code, out, errOut := runIssuer(t, c.args...)
		if code != 0 || errOut != "" {
			t.Errorf("issuer %q: exit %d, stderr %q", c.args, code, errOut)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("issuer %q: help lacks %q:\n%s", c.args, w, out)
			}
		}
		// Go's single-dash flag style never shows.
		for _, line := range strings.Split(out, "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "--") {
				t.Errorf("issuer %q: single-dash line %q", c.args, line)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runIssuer(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "issuer ") || !strings.Contains(out, " revision ") {
		t.Fatalf("--version: exit %d, %q", code, out)
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
