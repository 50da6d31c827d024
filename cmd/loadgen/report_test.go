package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
pkg: github.com/healthcode/healthcode/verifier
cpu: Test CPU
BenchmarkVerify-2                 	   20000	     52000 ns/op	    1200 B/op	      20 allocs/op
BenchmarkVerify-2                 	   20000	     50000 ns/op	    1200 B/op	      20 allocs/op
BenchmarkVerify-2                 	   20000	     51000 ns/op	    1200 B/op	      20 allocs/op
BenchmarkBareEd25519Verify-2      	   20000	     48000 ns/op
BenchmarkVerifyRatio/verify-2     	   20000	     99000 ns/op	         1.020 verify/bare	 1000 overhead-ns
PASS
ok  	github.com/healthcode/healthcode/verifier	5.1s
pkg: github.com/healthcode/healthcode/issuer
BenchmarkRedeem-2                  	     300	   3900000 ns/op	        24.00 sigs/op
BenchmarkRedeemRatio-2             	     300	   4300000 ns/op	         7.40 redeem/bare	      2900 overhead-µs
BenchmarkRedeemParallelRatio
BenchmarkRedeemParallelRatio/live=0-2     	       8	 171327275 ns/op	         1.25 redeem/bare	      2270 redemptions/s
BenchmarkRedeemParallelRatio/live=1M-2    	       8	 191327275 ns/op	         1.45 redeem/bare	      2010 redemptions/s
BenchmarkHTTPRatio-2   	       8	 212676381 ns/op	      2262 http-redemptions/s	         0.8888 http/inprocess	      2545 inprocess-redemptions/s
BenchmarkTokenSize/hint=off-2      	   50000	     30188 ns/op	        10.00 qr-version	       212.0 token-bytes
BenchmarkTokenSize/hint=on-2       	   50000	     24617 ns/op	        12.00 qr-version	       229.0 token-bytes
--- FAIL: BenchmarkBroken
pkg: github.com/healthcode/healthcode/issuer/boltstore
BenchmarkRedeemParallel/live=1M/delay=2ms-2   	  30000	   70000 ns/op	    14000 records/s
BenchmarkSweep1M-2   	       1	2000000000 ns/op	    500000 records/s	    900000 delete-only-records/s	   800 compact-ms
`

func TestParseTakesMedianPerPackage(t *testing.T) {
	r, err := parseBench(strings.NewReader(sample), "go.txt")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := r.get("verifier.BenchmarkVerify", "ns/op"); !ok || v != 51000 {
		t.Fatalf("median %v %v", v, ok)
	}
	if v, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "delete-only-records/s"); !ok || v != 900000 {
		t.Fatalf("sweep %v %v", v, ok)
	}
	if v, ok := r.get("issuer.BenchmarkTokenSize/hint=on", "qr-version"); !ok || v != 12 {
		t.Fatalf("qr %v %v", v, ok)
	}
	if v, ok := r.get("issuer/boltstore.BenchmarkRedeemParallel/live=1M/delay=2ms", "records/s"); !ok || v != 14000 {
		t.Fatalf("sub-sub-benchmark %v %v (have %v)", v, ok, r.m)
	}
	if _, ok := r.get("issuer.BenchmarkRedeem", "redemptions/s"); ok {
		t.Fatal("a unit the line does not have")
	}
	if r.cpu != "Test CPU" {
		t.Fatalf("cpu %q", r.cpu)
	}
	if _, err := parseBench(strings.NewReader("PASS\nok x 1s\n"), "x"); err == nil || err.Error() != "no benchmark results in the input" {
		t.Fatalf("empty input: %v", err)
	}
}

func TestTableJudgesEachFigureAgainstItsLimit(t *testing.T) {
	dir := t.TempDir()
	goTxt, loadJSON := filepath.Join(dir, "go.txt"), filepath.Join(dir, "load.json")
	if err := os.WriteFile(goTxt, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	// Written by loadgen's own type, as `loadgen --json` does.
	load := Result{Concurrency: 64, Requests: 30000, OK: 30000, Errors: map[string]int{}, RedemptionsPerS: 900,
		LatencyMs: Latency{P50: 60, P99: 200, Max: 400},
		RSS: &Memory{Rest: 20480, Peak: 40960, End: 40000, FirstHalfAvg: 39000, SecondHalfAvg: 39500, GrowthPercent: 1.3, Flat: true,
			RestAnon: 4096, PeakAnon: 11264, AnonFirstHalfAvg: 10240, AnonSecondHalfAvg: 10752, AnonGrowthPercent: 5, AnonFlat: true, EndFile: 20480},
		CPU: &CPU{IssuerSeconds: 30, IssuerPerRedemptionUs: 1000}}
	load.CPU.setBare(bareCost{sign: 20, verify: 50}, bareCost{sign: 25, verify: 60}, bareCost{sign: 20, verify: 50}, 24)
	b, err := json.Marshal(load)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loadJSON, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runReport([]string{"--go", goTxt, "--load", loadJSON}, &out, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	find := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line %q in\n%s", prefix, out.String())
		return ""
	}
	for prefix, want := range map[string][]string{
		"verify one token":                                {"51.0 µs", "1.02× (paired)", "ok"},
		"redeem 1 attestation → 24":                       {"3.90 ms", "7.40× (paired)", "2900 µs more", "MISSED"},
		"redeem, 64 at once (in-process), empty":          {"2270 redemptions/s", "1.25× (paired)", "ok"},
		"redeem, 64 at once (in-process), 1M live":        {"2010 redemptions/s", "1.45× (paired)", "MISSED"},
		"HTTP: issuer CPU per redemption":                 {"1000 µs", "bare 24× Sign + 2× Verify 720 µs, timed during the load (quiet: 580 before, 580 after)", "1.39×", "MISSED"},
		"  throughput and latency":                        {"900/s; p50 60.0 ms, p99 200.0 ms"},
		"  rounds of 256 over HTTP":                       {"2262/s", "in-process 2545/s", "0.89× (paired)"},
		"  store alone, 64 writers, 2 ms batch delay, 1M": {"14000 records/s"},
		"token, holder hint off":                          {"212 bytes, QR v10", "ok"},
		"token, holder hint on":                           {"229 bytes, QR v12", "MISSED"},
		"issuer RSS under load (peak)":                    {"40.0 MiB", "flat", "ok"},
		"  of which anon":                                 {"peak 11.0 MiB", "10.0 → 10.5 MiB", "+5.0%, flat", "mapped files at end 20.0 MiB", "ok"},
		"sweep 1M":                                        {"500000 records/s", "compaction 800 ms"},
		"render a token as QR PNG":                        {"not measured", "MISSING"},
		"scan to verdict":                                 {"not measured", "MISSING"},
	} {
		l := find(prefix)
		for _, w := range want {
			if !strings.Contains(l, w) {
				t.Errorf("line %q lacks %q", l, w)
			}
		}
	}
	// No ratio of two separate runs: QR decode stands alone.
	if l := find("QR PNG 512 px"); strings.Contains(l, "×") {
		t.Errorf("cross-run ratio in %q", l)
	}
}

func TestReportUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"report", "--load", "x"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), reportUsage) {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
