package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

func TestCheckTargetAcceptsOnlyLoopback(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://127.9.8.7:1/", "http://[::1]:8080", "http://localhost:80", "http://LOCALHOST:80", "http://[::ffff:127.0.0.1]:80"} {
		if _, err := checkTarget(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	cases := map[string]string{
		"http://10.0.0.1:8080":        `target host "10.0.0.1" is not loopback`,
		"http://192.168.1.5:80":       `target host "192.168.1.5" is not loopback`,
		"http://0.0.0.0:80":           `target host "0.0.0.0" is not loopback`,
		"http://example.com:80":       `target host "example.com" is not loopback`,
		"http://127.0.0.1.nip.io:80":  `target host "127.0.0.1.nip.io" is not loopback`,
		"http://[fe80::1%25lo]:80":    `target host "fe80::1%lo" is not loopback`,
		"http://[::1%25lo]:80":        `target host "::1%lo" is not loopback`,
		"https://127.0.0.1:8443":      `scheme must be http, got "https"`,
		"127.0.0.1:8080":              `--url: parse "127.0.0.1:8080"`,
		"ftp://127.0.0.1:21":          `scheme must be http, got "ftp"`,
		"http://127.0.0.1":            "give a port",
		"http://127.0.0.1:80/v1/x":    "want only scheme, host and port",
		"http://u:p@127.0.0.1:80":     "want only scheme, host and port",
		"http://127.0.0.1:80/?next=x": "want only scheme, host and port",
	}
	for u, want := range cases {
		_, err := checkTarget(u)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", u, err, want)
		}
	}
}

func TestDialRefusesNonLoopbackAddress(t *testing.T) {
	if err := loopbackOnly("tcp4", "10.1.2.3:80", nil); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("10.1.2.3: %v", err)
	}
	if err := loopbackOnly("tcp6", "[2001:db8::1]:80", nil); err == nil {
		t.Fatal("2001:db8::1 allowed")
	}
	if err := loopbackOnly("tcp4", "127.0.0.1:80", nil); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsRefuseBadFlags(t *testing.T) {
	cases := map[string]string{
		"":                                        "give exactly one of --issuer BIN and --url URL",
		"--issuer x --url http://127.0.0.1:1":     "give exactly one of --issuer BIN and --url URL",
		"--url http://127.0.0.1:1":                "--url needs --key (the attester key the issuer trusts)",
		"--url http://10.0.0.1:1 --key k":         `--url: target host "10.0.0.1" is not loopback; loadgen sends traffic only to 127.0.0.0/8, ::1 or localhost`,
		"--issuer x --pid 5":                      "--key and --pid go with --url; --issuer finds both itself",
		"--issuer x --concurrency 0":              "--concurrency must be between 1 and 4096, got 0",
		"--issuer x --duration 1h":                "--duration must be between 100ms and 30m0s, got 1h0m0s",
		"--issuer x --requests -1":                "--requests must be between 1 and 2000000, got -1",
		"--issuer x --timeout 0s":                 "--timeout must be between 1ns and 1m, got 0s",
		"--issuer x extra":                        `no arguments expected, got "extra"`,
		"--url http://127.0.0.1:1 --key k --keep": "--keep goes with --issuer",
	}
	for args, want := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), strings.Fields(args), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "loadgen: "+want+"\n") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", args, code, errb.String(), want)
		}
	}
}

func TestAutoRequestsFollowDuration(t *testing.T) {
	o, err := parseOptions([]string{"--issuer", "x", "--duration", "20s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.requests != 20*autoRate || o.concurrency != 64 {
		t.Fatalf("requests %d, concurrency %d", o.requests, o.concurrency)
	}
}

func TestParseStatus(t *testing.T) {
	m, err := parseStatus([]byte("Name:\tissuer\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nRssAnon:\t    4000 kB\nRssFile:\t    8000 kB\nThreads: 9\n"))
	if err != nil || m != (memSample{RSS: 12345, Anon: 4000, File: 8000}) {
		t.Fatalf("%+v %v", m, err)
	}
	if _, err := parseStatus([]byte("Name:\tx\nVmRSS:\t1 kB\n")); err == nil || !strings.Contains(err.Error(), "lacks VmRSS, RssAnon or RssFile") {
		t.Fatalf("missing lines: %v", err)
	}
	if _, err := parseStatus([]byte("VmRSS:\t12 MB\nRssAnon:\t1 kB\nRssFile:\t1 kB\n")); err == nil {
		t.Fatal("unit MB accepted")
	}
}

func samples(rss ...int64) []memSample {
	out := make([]memSample, len(rss))
	for n, v := range rss {
		// Anon flat, file growing: the shape of a store filling up.
		out[n] = memSample{RSS: v, Anon: 10000, File: v - 10000}
	}
	return out
}

func TestSummariseTellsFlatFromGrowing(t *testing.T) {
	flat := summarise(memSample{RSS: 10000}, samples(20000, 21000, 20500, 20800, 21200, 20600), memSample{RSS: 20700})
	if !flat.Flat || flat.Peak != 21200 || flat.FirstHalfAvg != 20500 || flat.SecondHalfAvg != 20866.666666666668 {
		t.Fatalf("%+v", flat)
	}
	grow := summarise(memSample{RSS: 10000}, samples(20000, 22000, 24000, 26000, 28000, 30000, 32000), memSample{RSS: 33000, Anon: 10000, File: 23000})
	// Odd count: the middle sample is in neither half.
	if grow.Flat || grow.FirstHalfAvg != 22000 || grow.SecondHalfAvg != 30000 || grow.Peak != 33000 {
		t.Fatalf("%+v", grow)
	}
	if !grow.AnonFlat || grow.AnonGrowthPercent != 0 || grow.EndFile != 23000 {
		t.Fatalf("anon %+v", grow)
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	d := make([]time.Duration, 200)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	l := latency(d)
	if l.P50 != 100 || l.P99 != 198 || l.Max != 200 {
		t.Fatalf("%+v", l)
	}
	if l := latency([]time.Duration{7 * time.Millisecond}); l.P50 != 7 || l.P99 != 7 {
		t.Fatalf("%+v", l)
	}
}

// Run against a real in-process issuer: every pre-signed attestation is
// redeemed once; a second pass with a key the issuer does not know is
// counted by status and error code.
func TestRunCountsAnswersAndErrors(t *testing.T) {
	env := issuertest.Start(t)
	var answered []string
	cfg := Config{URL: env.URL, Key: env.AttesterKey, AttesterID: env.AttesterID, Concurrency: 1,
		Duration: 10 * time.Second, Requests: 30, Timeout: 5 * time.Second,
		OnOK: func(a string) { answered = append(answered, a) }}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 30 || res.ErrorCount != 0 || !res.Exhausted || len(answered) != 30 || res.TokensPerBatch < 1 {
		t.Fatalf("%+v", res)
	}
	if res.LatencyMs.P50 <= 0 || res.LatencyMs.Max < res.LatencyMs.P99 || res.LatencyMs.P99 < res.LatencyMs.P50 {
		t.Fatalf("latency %+v", res.LatencyMs)
	}

	cfg.Key, cfg.OnOK, cfg.Requests, cfg.Concurrency = keyOf(7), nil, 5, 2
	res, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.ErrorCount != 5 || len(res.Errors) != 1 {
		t.Fatalf("%+v", res)
	}
	for k := range res.Errors {
		if !strings.HasPrefix(k, "422 ") {
			t.Fatalf("errors %v, want one 422 code", res.Errors)
		}
	}
}

func keyOf(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func TestBodyIsTheAPIRequest(t *testing.T) {
	atts, err := presign(keyOf(3), "demo-lab", 3, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range atts {
		want, err := json.Marshal(httpapi.TokensRequest{Attestations: []string{a}})
		if err != nil {
			t.Fatal(err)
		}
		if body(a) != string(want) {
			t.Fatalf("body %s, want %s", body(a), want)
		}
	}
	if atts[0] == atts[1] {
		t.Fatal("two attestations alike")
	}
}
