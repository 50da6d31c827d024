package upgradetest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/httpapi/openapicheck"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// The clock of release0's README: after its redemption, inside the
// replay record's life (until 2026-12-04T22:00Z).
var now = time.Date(2026, 12, 1, 22, 30, 0, 0, time.UTC)

// Upgrades go through the same HTTP contract as everything else.
func TestMain(m *testing.M) { os.Exit(openapicheck.Run(m, httpapi.OpenAPI, nil)) }

// copyDir copies release0's data directory, keeping file modes.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// git keeps only the executable bit: secrets go back to 0600.
		return os.WriteFile(dst, b, info.Mode().Perm()&0o700)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Release 0's data directory, opened by today's issuer, keeps what was
// promised: the pin venues hold, the admin token, the demo attester, and
// the replay record of what it redeemed, its audit log. Twice, since the first open may
// migrate (seal keys, move records) and the second opens the result.
func TestRelease0(t *testing.T) {
	src := filepath.Join("testdata", "release0")
	dir := filepath.Join(t.TempDir(), "data")
	copyDir(t, filepath.Join(src, "data"), dir)
	pin := read(t, filepath.Join(src, "fingerprint.txt"))
	adminToken := read(t, filepath.Join(dir, "admin.token"))
	redeemed := read(t, filepath.Join(src, "redeemed.jws"))
	demoKey, err := keyfile.Read(filepath.Join(dir, "demo-attester.key"))
	if err != nil {
		t.Fatal(err)
	}

	for _, round := range []string{"first open (migration)", "second open"} {
		t.Run(round, func(t *testing.T) {
			env := issuertest.Start(t, issuertest.WithDir(dir), issuertest.WithTime(now))
			if env.Pin != pin {
				t.Fatalf("bundle key fingerprint %s, release 0 had %s: every venue would have to re-pin", env.Pin, pin)
			}
			if status, body := get(t, env.URL+"/.well-known/healthcode/pin", ""); status != 200 || strings.TrimSpace(string(body)) != pin {
				t.Fatalf("pin endpoint: %d %q", status, body)
			}
			if _, err := bundle.Open(env.BundleRaw(t), pin); err != nil {
				t.Fatalf("the bundle does not open under release 0's pin: %v", err)
			}

			status, body := get(t, env.URL+"/v1/admin/attesters", adminToken)
			if status != 200 {
				t.Fatalf("release 0's admin token: %d %s", status, body)
			}
			var list struct{ Attesters []httpapi.AttesterJSON }
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatal(err)
			}
			demoPub := keyfile.EncodePublic(demoKey.Public().(ed25519.PublicKey))
			found := false
			for _, a := range list.Attesters {
				found = found || (a.ID == "demo-lab" && a.Key == demoPub)
			}
			if !found {
				t.Fatalf("the demo attester of release 0 is gone: %+v", list.Attesters)
			}

			// The audit log as release 0 stored it: its entries read back
			// whole, so the store's audit format has not moved.
			status, body = get(t, env.URL+"/v1/admin/audit", adminToken)
			var audit struct{ Entries []httpapi.AuditEntryJSON }
			if err := json.Unmarshal(body, &audit); status != 200 || err != nil {
				t.Fatalf("audit: %d %s", status, body)
			}
			release0 := time.Date(2026, 12, 1, 21, 56, 2, 0, time.UTC)
			want := []httpapi.AuditEntryJSON{
				{Time: release0, Admin: "startup", Action: "policy.set", Detail: "policy version 1 installed"},
				{Time: release0, Admin: "startup", Action: "admin_token.create", Detail: "admin token initial"},
				{Time: release0, Admin: "startup", Action: "attester.add", Detail: "attester demo-lab, key sha256:ec3955f7658d8ed3"},
			}
			if len(audit.Entries) < len(want) {
				t.Fatalf("audit: %d entries, want release 0's %d first: %s", len(audit.Entries), len(want), body)
			}
			for n, w := range want {
				if e := audit.Entries[n]; !e.Time.Equal(w.Time) || e.Admin != w.Admin || e.Action != w.Action || e.Detail != w.Detail {
					t.Fatalf("audit entry %d: %+v, release 0 wrote %+v", n, e, w)
				}
			}

			status, body = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{redeemed}})
			var e httpapi.ErrorResponse
			if err := json.Unmarshal(body, &e); status != http.StatusConflict || err != nil || e.Error.Code != "already_redeemed" {
				t.Fatalf("redeemed.jws again: %d %s, want 409 already_redeemed", status, body)
			}
			// The demo attester still signs what redeems.
			fresh, err := attestation.Sign(demoKey, attestation.Claims{Attester: "demo-lab", Kind: attestation.TestNegative,
				At: now.Add(-time.Hour).Unix(), Expires: now.Add(24 * time.Hour).Unix(), ID: "upgrade-" + strings.ReplaceAll(round, " ", "-")})
			if err != nil {
				t.Fatal(err)
			}
			if colour, toks := env.Redeem(t, fresh); colour != "green" || len(toks) == 0 {
				t.Fatalf("a new attestation of the demo attester: %s, %d tokens", colour, len(toks))
			}
		})
	}
	if !bytes.Equal([]byte(read(t, filepath.Join(dir, "admin.token"))), []byte(adminToken)) {
		t.Fatal("the admin token file changed")
	}
}
