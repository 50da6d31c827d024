package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

var t0 = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)

// admin runs 'issuer admin ARGS' against env with its admin token in a file.
func admin(t *testing.T, env *issuertest.Env, args ...string) (int, string, string) {
	t.Helper()
	tf := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tf, []byte(env.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	full := append([]string{"admin", "--url", env.URL, "--token-file", tf}, args...)
	code := run(context.Background(), full, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func statusOf(env *issuertest.Env, kid string) string {
	for _, k := range env.Issuer.Keys() {
		if k.ID == kid {
			return k.Status
		}
	}
	return ""
}

// 'issuer admin keys rotate' publishes a next key that signs one bundle
// lifetime later; a second scheduled rotation is refused while one is
// pending; --immediate makes a key that signs at once (a compromised key).
// Every step goes through the HTTP API and lands in the audit log.
func TestAdminKeysRotate(t *testing.T) {
	t.Setenv("HEALTHCODE_ADMIN_TOKEN", "")
	env := issuertest.Start(t, issuertest.WithTime(t0))
	first := env.Issuer.Keys()[0].ID
	lifetime := env.Issuer.Policy().Bundle.Lifetime.D()

	code, out, errOut := admin(t, env, "keys", "rotate")
	if code != 0 {
		t.Fatalf("rotate: exit %d: %s", code, errOut)
	}
	var next string
	for _, k := range env.Issuer.Keys() {
		if k.ID != first {
			next = k.ID
		}
	}
	signsFrom := t0.Add(lifetime).Format(time.RFC3339)
	if want := "key " + next + " published; it signs from " + signsFrom + "\n"; out != want {
		t.Fatalf("rotate printed %q, want %q", out, want)
	}
	if statusOf(env, next) != bundle.StatusNext || statusOf(env, first) != bundle.StatusCurrent {
		t.Fatalf("after scheduled rotation: %+v", env.Issuer.Keys())
	}
	if k, ok := env.Bundle(t).Find(next); !ok || k.Status != bundle.StatusNext {
		t.Fatal("the scheduled key is not in the served bundle as next")
	}
	// Still the old key that signs.
	_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	if kid := kidOf(t, toks[0]); kid != first {
		t.Fatalf("signed by %s before the scheduled key's time, want %s", kid, first)
	}

	code, _, errOut = admin(t, env, "keys", "rotate")
	if want := "issuer: key " + next + " is already published and signs from " + signsFrom + " (conflict, HTTP 409)\n"; code != 1 || errOut != want {
		t.Fatalf("second scheduled rotation: exit %d %q, want 1 %q", code, errOut, want)
	}

	code, out, errOut = admin(t, env, "--json", "keys", "rotate", "--immediate")
	if code != 0 {
		t.Fatalf("rotate --immediate: exit %d: %s", code, errOut)
	}
	var got struct {
		Kid      string    `json:"kid"`
		ActiveAt time.Time `json:"active_at"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || !got.ActiveAt.Equal(t0) {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if statusOf(env, got.Kid) != bundle.StatusCurrent || statusOf(env, first) != bundle.StatusRetired || statusOf(env, next) != bundle.StatusNext {
		t.Fatalf("after immediate rotation of %s (first %s, next %s): %+v", got.Kid, first, next, env.Issuer.Keys())
	}
	_, toks = env.Redeem(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	if kid := kidOf(t, toks[0]); kid != got.Kid {
		t.Fatalf("signed by %s after immediate rotation, want %s", kid, got.Kid)
	}

	code, out, errOut = admin(t, env, "keys", "list")
	if code != 0 {
		t.Fatalf("keys list: %s", errOut)
	}
	for _, want := range []string{first + "  retired", next + "  next", got.Kid + "  current"} {
		if !strings.Contains(out, want) {
			t.Fatalf("keys list lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = admin(t, env, "audit")
	rotations := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[2] == "keys.rotate" {
			if f[1] != env.AdminName || f[3]+" "+f[6] != map[bool]string{true: "scheduled " + next, false: "immediate " + got.Kid}[rotations == 0] {
				t.Fatalf("audit line %q", line)
			}
			rotations++
		}
	}
	if code != 0 || rotations != 2 {
		t.Fatalf("audit:\n%s", out)
	}
	if strings.Contains(out, env.AdminToken) || !strings.Contains(out, env.AdminName) {
		t.Fatalf("audit should name the token, not hold it:\n%s", out)
	}
}

// A wrong admin token is refused with the API's message, exit 1.
func TestAdminBadToken(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	t.Setenv("HEALTHCODE_ADMIN_TOKEN", "hcadm_not-a-real-token")
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"admin", "--url", env.URL, "keys", "rotate"}, strings.NewReader(""), &stdout, &stderr)
	if want := "issuer: the admin token is not valid (unauthorized, HTTP 401)\n"; code != 1 || stderr.String() != want {
		t.Fatalf("exit %d %q, want 1 %q", code, stderr.String(), want)
	}
	if len(env.Issuer.Keys()) != 1 {
		t.Fatal("a refused rotation made a key")
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct{ Kid string }
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

// 'issuer admin keys revoke KID' (POST /v1/admin/keys/{kid}/revoke): the
// signing key leaves the served bundle at once, in a new sequence that
// lists it as withdrawn; a new key signs; the audit log names the admin.
func TestAdminKeysRevoke(t *testing.T) {
	t.Setenv("HEALTHCODE_ADMIN_TOKEN", "")
	env := issuertest.Start(t, issuertest.WithTime(t0))
	stolen := env.Issuer.Keys()[0].ID
	before := env.Bundle(t)

	code, out, errOut := admin(t, env, "keys", "revoke", stolen)
	if code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	after := env.Bundle(t)
	signing := ""
	for _, k := range env.Issuer.Keys() {
		if k.Status == bundle.StatusCurrent {
			signing = k.ID
		}
	}
	if want := fmt.Sprintf("key %s revoked: bundle %d withdraws it; key %s signs. Verifiers must sync now.\n", stolen, after.Sequence, signing); out != want {
		t.Fatalf("revoke printed %q, want %q", out, want)
	}
	if after.Sequence <= before.Sequence {
		t.Fatalf("bundle sequence %d after revocation, %d before", after.Sequence, before.Sequence)
	}
	if _, ok := after.Find(stolen); ok || len(after.Withdrawn) != 1 || after.Withdrawn[0] != stolen {
		t.Fatalf("served bundle after revocation: keys %+v, withdrawn %v", after.Keys, after.Withdrawn)
	}
	_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	if kid := kidOf(t, toks[0]); kid != signing || kid == stolen {
		t.Fatalf("signed by %s after the revocation, want the new key %s", kid, signing)
	}

	code, _, errOut = admin(t, env, "keys", "revoke", stolen)
	if want := "issuer: key " + stolen + " is already revoked (conflict, HTTP 409)\n"; code != 1 || errOut != want {
		t.Fatalf("second revocation: exit %d %q, want %q", code, errOut, want)
	}
	code, _, errOut = admin(t, env, "keys", "revoke", "nokey")
	if want := "issuer: no signing key \"nokey\" (not_found, HTTP 404)\n"; code != 1 || errOut != want {
		t.Fatalf("unknown key: exit %d %q, want %q", code, errOut, want)
	}
	code, _, errOut = admin(t, env, "keys", "revoke")
	if want := "issuer: usage: issuer admin keys revoke KID\n"; code != 2 || !strings.HasPrefix(errOut, want) {
		t.Fatalf("no kid: exit %d %q", code, errOut)
	}

	// Over HTTP: authentication first, a strict (empty) body, JSON answer.
	post := func(tok, body string) (int, string) {
		req, _ := http.NewRequest("POST", env.URL+"/v1/admin/keys/"+signing+"/revoke", strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, body := post("", ""); code != 401 {
		t.Fatalf("unauthenticated revoke: %d %s", code, body)
	}
	if code, body := post(env.AdminToken, `{"why":"x"}`); code != 400 || !strings.Contains(body, `"unknown field \"why\""`) {
		t.Fatalf("revoke with an unknown field: %d %s", code, body)
	}
	if _, ok := env.Bundle(t).Find(signing); !ok {
		t.Fatal("a refused revocation withdrew the key")
	}
	code2, body := post(env.AdminToken, "")
	var rev httpapi.RevocationJSON
	if code2 != 200 || json.Unmarshal([]byte(body), &rev) != nil || rev.Kid != signing || rev.SigningKid == signing || rev.BundleSequence != env.Bundle(t).Sequence {
		t.Fatalf("revoke over HTTP: %d %s", code2, body)
	}

	code, out, _ = admin(t, env, "audit")
	revocations := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[2] == "keys.revoke" {
			if f[1] != env.AdminName || f[4] != []string{stolen, signing}[revocations] {
				t.Fatalf("audit line %q", line)
			}
			revocations++
		}
	}
	if code != 0 || revocations != 2 {
		t.Fatalf("audit:\n%s", out)
	}
}
