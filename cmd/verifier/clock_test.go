package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/policy"
)

// A verifier whose clock is behind the bundle's issue time by more than the
// policy's skew (300s here) says so, on sync and on every check; within the
// skew it says nothing.
func TestClockBehindBundleWarns(t *testing.T) {
	is := newIssuer(t) // serves a bundle issued at t0-1h
	iat := t0.Add(-time.Hour)
	tok := is.token(t, policy.Green, t0.Add(-4*time.Hour), t0.Add(10*24*time.Hour), "")
	const warning = "warning: this machine's clock"
	for _, tc := range []struct {
		now  time.Time
		want string
	}{
		{iat.Add(-5 * time.Minute), ""},
		{iat.Add(-5*time.Minute - time.Second), "this machine's clock (2026-11-20T10:54:59Z) is 5m1s behind the bundle's issue time (2026-11-20T11:00:00Z), more than the allowed clock skew (5m0s); check the clock, or tokens will be judged on the wrong time\n"},
		{iat.Add(-3 * time.Hour), "this machine's clock (2026-11-20T08:00:00Z) is 3h0m0s behind the bundle's issue time (2026-11-20T11:00:00Z), more than the allowed clock skew (5m0s); check the clock, or tokens will be judged on the wrong time\n"},
		{iat.Add(time.Hour), ""},
	} {
		file := filepath.Join(t.TempDir(), "bundle.json")
		r := runAt(tc.now, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file)
		r.want(t, exitValid)
		if tc.want == "" {
			if strings.Contains(r.stderr, warning) {
				t.Fatalf("sync at %s: unexpected warning %q", tc.now, r.stderr)
			}
		} else if !strings.Contains(r.stderr, "verifier sync: warning: "+tc.want) {
			t.Fatalf("sync at %s: stderr %q, want the clock warning %q", tc.now, r.stderr, tc.want)
		}

		r = runAt(tc.now, "", "check", "--bundle", file, tok)
		r.want(t, exitValid)
		if tc.want == "" {
			if strings.Contains(r.stderr, warning) {
				t.Fatalf("check at %s: unexpected warning %q", tc.now, r.stderr)
			}
		} else if !strings.Contains(r.stderr, "verifier check: warning: "+tc.want) {
			t.Fatalf("check at %s: stderr %q, want the clock warning", tc.now, r.stderr)
		}
	}
}
