package main

import (
	"bytes"
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
BenchmarkRedeemParallel-2          	    2000	    600000 ns/op	      1650 redemptions/s	        24.00 sigs/op
BenchmarkBareSignBatch-2           	    3000	    410000 ns/op	        24.00 sigs/op
BenchmarkBareSignBatchParallel-2   	    6000	    220000 ns/op	      4500 batches/s	        24.00 sigs/op
BenchmarkRedeemParallelRatio-2     	       8	 171327275 ns/op	         1.25 redeem/bare	      2270 redemptions/s
BenchmarkHTTPRatio-2   	       8	 212676381 ns/op	      2262 http-redemptions/s	         0.8888 http/inprocess	      2545 inprocess-redemptions/s
BenchmarkTokenSize/hint=off-2      	   50000	     30188 ns/op	        10.00 qr-version	       212.0 token-bytes
BenchmarkTokenSize/hint=on-2       	   50000	     24617 ns/op	        12.00 qr-version	       229.0 token-bytes
--- FAIL: BenchmarkBroken
pkg: github.com/healthcode/healthcode/issuer/boltstore
BenchmarkSweep1M-2   	       1	2000000000 ns/op	    500000 records/s	    900000 delete-only-records/s	   800 compact-ms
`

func TestParseTakesMedianPerPackage(t *testing.T) {
	r, err := parseBench(strings.NewReader(sample))
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
	if _, ok := r.get("issuer.BenchmarkRedeem", "redemptions/s"); ok {
		t.Fatal("a unit the line does not have")
	}
	if r.cpu != "Test CPU" {
		t.Fatalf("cpu %q", r.cpu)
	}
	if _, err := parseBench(strings.NewReader("PASS\nok x 1s\n")); err == nil {
		t.Fatal("empty input accepted")
	}
}

func TestTableJudgesEachFigureAgainstItsLimit(t *testing.T) {
	dir := t.TempDir()
	goTxt, loadJSON := filepath.Join(dir, "go.txt"), filepath.Join(dir, "load.json")
	if err := os.WriteFile(goTxt, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	load := `{"concurrency":64,"requests":30000,"ok":30000,"error_count":0,"errors":{},"redemptions_per_s":900,
	"latency_ms":{"p50":60,"p99":200,"max":400},"rss_kib":{"rest":20480,"peak":40960,"end":40000,"first_half_avg":39000,"second_half_avg":39500,"growth_percent":1.3,"flat":true,
	"anon_first_half_avg":10240,"anon_second_half_avg":10752,"anon_growth_percent":5,"anon_flat":true,"end_file":20480}}`
	if err := os.WriteFile(loadJSON, []byte(load), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"--go", goTxt, "--load", loadJSON}, &out); err != nil {
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
		"verify one token":                {"1.06×", "(paired 1.02×)", "ok"},
		"redeem 1 attestation → 24":       {"9.51×", "MISSED"},
		"redeem, 64 at once":              {"2.73× (paired 1.25×)", "ok"},
		"HTTP redemptions/s on 127.0.0.1": {"900/s", "1650/s", "0.55× (paired 0.89×)", "ok"},
		"  paired rounds of 256":          {"2262/s", "in-process 2545/s"},
		"token, holder hint off":          {"212 bytes, QR v10", "ok"},
		"token, holder hint on":           {"229 bytes, QR v12", "MISSED"},
		"issuer RSS under load (peak)":    {"40.0 MiB", "flat", "ok"},
		"  of which anon":                 {"10.0 → 10.5 MiB", "+5.0%, flat", "bbolt file at end 20.0 MiB", "ok"},
		"sweep 1M":                        {"500000 records/s", "compaction 800 ms"},
		"render a token as QR PNG":        {"not measured", "MISSING"},
		"scan to verdict":                 {"not measured", "MISSING"},
	} {
		l := find(prefix)
		for _, w := range want {
			if !strings.Contains(l, w) {
				t.Errorf("line %q lacks %q", l, w)
			}
		}
	}
}
