//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestClusterOptionsRefuseBadFlags(t *testing.T) {
	cases := map[string]string{
		"cluster":                                     "cluster: --issuer BIN is required",
		"cluster --issuer x --replicas 0":             "cluster: --replicas must be between 1 and 8, got 0",
		"cluster --issuer x --replicas 9":             "cluster: --replicas must be between 1 and 8, got 9",
		"cluster --issuer x --concurrency 0":          "cluster: --concurrency must be between 1 and 4096, got 0",
		"cluster --issuer x --duration 500ms":         "cluster: --duration must be between 1s and 10m, got 500ms",
		"cluster --issuer x --timeout 2m":             "cluster: --timeout must be between 1ns and 1m, got 2m0s",
		"cluster --issuer x --redis-wait 2":           "cluster: --redis-wait must be 0 or 1 (the cluster has one replica per master), got 2",
		"cluster --issuer x --memory-records -1":      "cluster: --memory-records must be between 0 and 2000000, got -1",
		"cluster --issuer x more":                     `cluster: no arguments expected, got "more"`,
		"cluster --issuer x --memory-records 3000000": "cluster: --memory-records must be between 0 and 2000000, got 3000000",
	}
	for args, want := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), strings.Fields(args), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "loadgen: "+want+"\n") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", args, code, errb.String(), want)
		}
	}
}
