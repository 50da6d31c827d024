package web_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/verifier"
	"github.com/healthcode/healthcode/web"
	"github.com/healthcode/healthcode/web/webtest"
)

// syncNow makes an open verifier page sync as it does when it comes back
// online (and every ten minutes), and waits for the sync to finish.
func syncNow(t testing.TB, b *webtest.Browser) {
	t.Helper()
	n := webtest.Eval[string](t, b, `document.body.dataset.syncs || '0'`)
	webtest.Eval[any](t, b, `window.dispatchEvent(new Event('online'))`)
	b.WaitFor(t, `(document.body.dataset.syncs || '0') !== '`+n+`'`, 10*time.Second, `document.body.dataset.syncs`)
}

// TestRevokedKeyRefusedAfterSync: after `keys revoke` (issue 11 item 1),
// the web verifier served by the issuer and the kiosk (`verifier serve`,
// reading the bundle file `verifier sync` writes) pick up the new bundle
// at their next sync and refuse the withdrawn key's tokens with the
// withdrawn text, while another key's tokens stay valid.
func TestRevokedKeyRefusedAfterSync(t *testing.T) {
	requireBuilt(t)
	env := issuertest.Start(t)
	ctx := context.Background()
	_, stolen := issuerToken(t, env, attestation.TestNegative, "")
	if _, _, err := env.Issuer.RotateKeys(ctx, "test", true); err != nil {
		t.Fatal(err)
	}
	_, other := issuerToken(t, env, attestation.TestPositive, "")
	if kidOf(t, stolen) == kidOf(t, other) {
		t.Fatal("both tokens under one key")
	}

	// The kiosk's bundle file, as `verifier sync` keeps it.
	file := filepath.Join(t.TempDir(), "bundle.jws")
	syncFile := func() {
		if err := os.WriteFile(file, []byte(env.BundleRaw(t)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	syncFile()
	ks := httptest.NewServer(web.Kiosk(func() (string, string, error) {
		b, err := os.ReadFile(file)
		return strings.TrimSpace(string(b)), env.Pin, err
	}))
	t.Cleanup(ks.Close)

	apps := map[string]*webtest.Browser{"issuer": webtest.Start(t), "kiosk": webtest.Start(t)}
	open(t, apps["issuer"], env.URL)
	open(t, apps["kiosk"], ks.URL)
	for name, b := range apps {
		for _, tok := range []string{stolen, other} {
			if v := paste(t, b, tok); v.Kind != "green" && v.Kind != "red" {
				t.Fatalf("%s before the revocation: %+v", name, v)
			}
			clearVerdict(t, b)
		}
	}

	rev, err := env.Issuer.RevokeKey(ctx, "test", kidOf(t, stolen))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revoked %s; bundle %d", rev.Revoked, rev.Sequence)
	syncFile()
	for name, b := range apps {
		syncNow(t, b)
		v := paste(t, b, stolen)
		b.Screenshot(t, name+"-withdrawn")
		if v.Kind != "invalid" || v.Reason != verifier.ReasonKeyWithdrawn || v.Detail != "Signed with a key the issuer has withdrawn. Ask for a new code." {
			t.Fatalf("%s: the withdrawn key's token after a sync: %+v", name, v)
		}
		clearVerdict(t, b)
		if v := paste(t, b, other); v.Kind != "red" {
			t.Fatalf("%s: another key's token after the revocation: %+v", name, v)
		}
		clearVerdict(t, b)
	}
}
