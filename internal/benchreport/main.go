// Command benchreport prints the summary table of `make bench`: each
// measured figure beside its limit, measured in the same run, as a ratio.
//
//	go run ./internal/benchreport --go bin/bench/go.txt --load bin/bench/load.json
//
// It reads `go test -bench` output (several packages, any -count: the
// median of repeated lines is used) and `loadgen --json`.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	goPath := fs.String("go", "", "file of `go test -bench` output")
	loadPath := fs.String("load", "", "file of `loadgen --json` output (optional)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *goPath == "" || fs.NArg() != 0 {
		return errors.New("usage: benchreport --go FILE [--load FILE]")
	}
	f, err := os.Open(*goPath)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := parseBench(f)
	if err != nil {
		return err
	}
	var load *loadResult
	if *loadPath != "" {
		b, err := os.ReadFile(*loadPath)
		if err != nil {
			return err
		}
		load = new(loadResult)
		if err := json.Unmarshal(b, load); err != nil {
			return fmt.Errorf("%s: %w", *loadPath, err)
		}
	}
	fmt.Fprintln(w, machine(res))
	printRows(w, rows(res, load))
	return nil
}

// results maps "pkg.BenchmarkName" (pkg relative to the module, the
// -GOMAXPROCS suffix dropped) to unit to the values seen.
type results struct {
	m   map[string]map[string][]float64
	cpu string
}

// get returns the median of a metric, and whether it was measured.
func (r *results) get(name, unit string) (float64, bool) {
	v := r.m[name][unit]
	if len(v) == 0 {
		return 0, false
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

const module = "github.com/healthcode/healthcode/"

func parseBench(r io.Reader) (*results, error) {
	res := &results{m: map[string]map[string][]float64{}}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(strings.TrimSpace(p), module)
			continue
		}
		if c, ok := strings.CutPrefix(line, "cpu: "); ok {
			res.cpu = strings.TrimSpace(c)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// name, iterations, then value-unit pairs.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		key := pkg + "." + name
		if res.m[key] == nil {
			res.m[key] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: value %q: %w", line, f[i], err)
			}
			res.m[key][f[i+1]] = append(res.m[key][f[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res.m) == 0 {
		return nil, errors.New("no benchmark results in the input")
	}
	return res, nil
}

// loadResult is the part of loadgen's JSON the report uses.
type loadResult struct {
	Concurrency     int            `json:"concurrency"`
	ElapsedSeconds  float64        `json:"elapsed_s"`
	Requests        int            `json:"requests"`
	OK              int            `json:"ok"`
	ErrorCount      int            `json:"error_count"`
	Errors          map[string]int `json:"errors"`
	RedemptionsPerS float64        `json:"redemptions_per_s"`
	TokensPerBatch  float64        `json:"tokens_per_batch"`
	Exhausted       bool           `json:"exhausted"`
	LatencyMs       struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
	RSS *struct {
		Rest          float64 `json:"rest"`
		Peak          float64 `json:"peak"`
		End           float64 `json:"end"`
		FirstHalfAvg  float64 `json:"first_half_avg"`
		SecondHalfAvg float64 `json:"second_half_avg"`
		GrowthPercent float64 `json:"growth_percent"`
		Flat          bool    `json:"flat"`
		// RssAnon: without the mapped bbolt file (absent from old files).
		AnonFirstHalfAvg  *float64 `json:"anon_first_half_avg"`
		AnonSecondHalfAvg float64  `json:"anon_second_half_avg"`
		AnonGrowthPercent float64  `json:"anon_growth_percent"`
		AnonFlat          bool     `json:"anon_flat"`
		EndFile           float64  `json:"end_file"`
	} `json:"rss_kib"`
}

// row is one line of the table. An empty Target means no limit: the ratio
// is shown for scale.
type row struct {
	What, Value, Against, Ratio, Target, Verdict string
}

func machine(r *results) string {
	cpu := r.cpu
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = ", load average " + strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("machine: %s, %d cores, %s%s", cpu, runtime.NumCPU(), runtime.Version(), load)
}

func dur(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.0f ns", ns)
	}
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

const missing = "not measured"

func rows(r *results, load *loadResult) []row {
	var out []row
	add := func(x row) { out = append(out, x) }
	ns := func(name string) (float64, bool) { return r.get(name, "ns/op") }

	// 1. Offline verification.
	v, okV := ns("verifier.BenchmarkVerify")
	bv, okB := ns("verifier.BenchmarkBareEd25519Verify")
	if okV && okB {
		x := row{What: "verify one token (string → verdict)", Value: dur(v), Against: "bare ed25519.Verify " + dur(bv),
			Ratio: fmt.Sprintf("%.2f×", v/bv), Target: "≤ 1.10", Verdict: verdict(v/bv <= 1.10)}
		if p, ok := r.get("verifier.BenchmarkVerifyRatio/verify", "verify/bare"); ok {
			// Paired medians resist other load on the machine; they decide.
			x.Ratio += fmt.Sprintf(" (paired %.2f×)", p)
			x.Verdict = verdict(p <= 1.10)
		}
		add(x)
	} else {
		add(row{What: "verify one token (string → verdict)", Value: missing, Target: "≤ 1.10", Verdict: "MISSING"})
	}

	// 2. QR PNG → verdict.
	if q, ok := ns("issuer.BenchmarkQRDecodeVerify"); ok && okB {
		add(row{What: "QR PNG 512 px → verdict (decode + verify)", Value: dur(q), Against: "bare ed25519.Verify " + dur(bv),
			Ratio: fmt.Sprintf("%.0f×", q/bv), Verdict: "info"})
	} else {
		add(row{What: "QR PNG 512 px → verdict (decode + verify)", Value: missing, Verdict: "MISSING"})
	}

	// 3. Redemption vs its bare signatures.
	sigs, _ := r.get("issuer.BenchmarkRedeem", "sigs/op")
	rd, ok1 := ns("issuer.BenchmarkRedeem")
	bs, ok2 := ns("issuer.BenchmarkBareSignBatch")
	if ok1 && ok2 {
		x := row{What: fmt.Sprintf("redeem 1 attestation → %.0f tokens, one at a time", sigs), Value: dur(rd),
			Against: fmt.Sprintf("%.0f× ed25519.Sign %s", sigs, dur(bs)), Ratio: fmt.Sprintf("%.2f×", rd/bs), Target: "≤ 1.3", Verdict: verdict(rd/bs <= 1.3)}
		if p, ok := r.get("issuer.BenchmarkRedeemRatio", "redeem/bare"); ok {
			x.Ratio += fmt.Sprintf(" (paired %.2f×)", p)
			x.Verdict = verdict(p <= 1.3)
		}
		add(x)
	} else {
		add(row{What: "redeem 1 attestation, one at a time", Value: missing, Target: "≤ 1.3", Verdict: "MISSING"})
	}
	rp, ok1 := ns("issuer.BenchmarkRedeemParallel")
	bp, ok2 := ns("issuer.BenchmarkBareSignBatchParallel")
	rps, _ := r.get("issuer.BenchmarkRedeemParallel", "redemptions/s")
	if ok1 && ok2 {
		x := row{What: "redeem, 64 at once (in-process, per op)", Value: fmt.Sprintf("%s (%.0f/s)", dur(rp), rps),
			Against: fmt.Sprintf("%.0f× ed25519.Sign, 64 at once %s", sigs, dur(bp)), Ratio: fmt.Sprintf("%.2f×", rp/bp), Target: "≤ 1.3", Verdict: verdict(rp/bp <= 1.3)}
		if p, ok := r.get("issuer.BenchmarkRedeemParallelRatio", "redeem/bare"); ok {
			x.Ratio += fmt.Sprintf(" (paired %.2f×)", p)
			x.Verdict = verdict(p <= 1.3)
		}
		add(x)
	} else {
		add(row{What: "redeem, 64 at once (in-process)", Value: missing, Target: "≤ 1.3", Verdict: "MISSING"})
	}

	// 4. HTTP redemptions/s vs in-process.
	switch {
	case load == nil:
		add(row{What: "HTTP redemptions/s on 127.0.0.1 (loadgen)", Value: missing, Target: "≥ 0.5", Verdict: "MISSING"})
	case rps > 0:
		ratio := load.RedemptionsPerS / rps
		x := row{What: fmt.Sprintf("HTTP redemptions/s on 127.0.0.1 (loadgen, %d clients)", load.Concurrency), Value: fmt.Sprintf("%.0f/s", load.RedemptionsPerS),
			Against: fmt.Sprintf("in-process, 64 at once %.0f/s", rps), Ratio: fmt.Sprintf("%.2f×", ratio), Target: "≥ 0.5", Verdict: verdict(ratio >= 0.5)}
		if p, ok := r.get("issuer.BenchmarkHTTPRatio", "http/inprocess"); ok {
			x.Ratio += fmt.Sprintf(" (paired %.2f×)", p)
			x.Verdict = verdict(p >= 0.5)
		}
		add(x)
	default:
		add(row{What: "HTTP redemptions/s on 127.0.0.1 (loadgen)", Value: fmt.Sprintf("%.0f/s", load.RedemptionsPerS), Against: "in-process: " + missing, Target: "≥ 0.5", Verdict: "MISSING"})
	}
	if p, ok := r.get("issuer.BenchmarkHTTPRatio", "http-redemptions/s"); ok {
		i, _ := r.get("issuer.BenchmarkHTTPRatio", "inprocess-redemptions/s")
		add(row{What: "  paired rounds of 256: HTTP vs in-process, one issuer", Value: fmt.Sprintf("%.0f/s", p), Against: fmt.Sprintf("in-process %.0f/s", i), Verdict: "info"})
	}
	if load != nil {
		add(row{What: "  latency under that load", Value: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.0f ms", load.LatencyMs.P50, load.LatencyMs.P99, load.LatencyMs.Max), Verdict: "info"})
		errs := "none"
		if load.ErrorCount > 0 {
			keys := make([]string, 0, len(load.Errors))
			for k := range load.Errors {
				keys = append(keys, fmt.Sprintf("%s: %d", k, load.Errors[k]))
			}
			slices.Sort(keys)
			errs = strings.Join(keys, ", ")
		}
		add(row{What: "  failed requests", Value: fmt.Sprintf("%d of %d", load.ErrorCount, load.Requests), Against: errs, Target: "0", Verdict: verdict(load.ErrorCount == 0 && load.OK > 0)})
	}
	if st, ok := r.get("issuer/boltstore.BenchmarkRedeemParallel/delay=2ms", "records/s"); ok {
		add(row{What: "  store alone: replay records/s, 64 writers, 2 ms batch delay", Value: fmt.Sprintf("%.0f/s", st), Verdict: "info"})
	}

	// 5. QR rendering vs a signature.
	png, okP := ns("qr.BenchmarkPNG")
	sg, okS := ns("qr.BenchmarkBareEd25519Sign")
	if okP && okS {
		x := row{What: "render a token as QR PNG 512 px (go-qrcode)", Value: dur(png), Against: "ed25519.Sign " + dur(sg), Ratio: fmt.Sprintf("%.0f×", png/sg), Verdict: "info: not on the redemption path"}
		if p, ok := r.get("qr.BenchmarkPNGRatio", "png/sign"); ok {
			x.Ratio += fmt.Sprintf(" (paired %.0f×)", p)
		}
		add(x)
	} else {
		add(row{What: "render a token as QR PNG", Value: missing, Verdict: "MISSING"})
	}

	// 6. Sweep.
	if s, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "records/s"); ok {
		x := row{What: "sweep 1M expired replay records (delete + compact)", Value: fmt.Sprintf("%.0f records/s", s), Verdict: "info"}
		if d, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "delete-only-records/s"); ok {
			x.Against = fmt.Sprintf("delete only %.0f records/s", d)
		}
		if c, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "compact-ms"); ok {
			x.Against += fmt.Sprintf(", compaction %.0f ms", c)
		}
		add(x)
	} else {
		add(row{What: "sweep 1M expired replay records", Value: missing + " (issuer/boltstore BenchmarkSweep1M)", Verdict: "MISSING"})
	}

	// 7. Token size and QR version.
	for _, h := range []struct {
		name string
		max  float64
	}{{"off", 10}, {"on", 11}} {
		b, ok1 := r.get("issuer.BenchmarkTokenSize/hint="+h.name, "token-bytes")
		qv, ok2 := r.get("issuer.BenchmarkTokenSize/hint="+h.name, "qr-version")
		if ok1 && ok2 {
			add(row{What: "token, holder hint " + h.name, Value: fmt.Sprintf("%.0f bytes, QR v%.0f at M", b, qv),
				Target: fmt.Sprintf("≤ v%.0f", h.max), Verdict: verdict(qv <= h.max)})
		} else {
			add(row{What: "token, holder hint " + h.name, Value: missing, Target: fmt.Sprintf("≤ v%.0f", h.max), Verdict: "MISSING"})
		}
	}

	// 8. Issuer memory.
	if load != nil && load.RSS != nil {
		m := load.RSS
		add(row{What: "issuer RSS at rest", Value: fmt.Sprintf("%.1f MiB", m.Rest/1024), Target: "≤ 64 MiB", Verdict: verdict(m.Rest/1024 <= 64)})
		flat := "flat"
		if !m.Flat {
			flat = "GROWING"
		}
		add(row{What: "issuer RSS under load (peak)", Value: fmt.Sprintf("%.1f MiB", m.Peak/1024),
			Against: fmt.Sprintf("VmRSS halves %.1f → %.1f MiB (%+.1f%%, %s)", m.FirstHalfAvg/1024, m.SecondHalfAvg/1024, m.GrowthPercent, flat),
			Target:  "≤ 64 MiB", Verdict: verdict(m.Peak/1024 <= 64 && (m.Flat || m.AnonFirstHalfAvg != nil && m.AnonFlat))})
		if m.AnonFirstHalfAvg != nil {
			aflat := "flat"
			if !m.AnonFlat {
				aflat = "GROWING"
			}
			// VmRSS counts the mapped bbolt file, which grows with the
			// replay records held until their deadline; RssAnon is the
			// process's own memory, where a leak would show.
			add(row{What: "  of which anon (heap, stacks)", Value: fmt.Sprintf("halves %.1f → %.1f MiB", *m.AnonFirstHalfAvg/1024, m.AnonSecondHalfAvg/1024),
				Against: fmt.Sprintf("%+.1f%%, %s; mapped bbolt file at end %.1f MiB", m.AnonGrowthPercent, aflat, m.EndFile/1024), Target: "flat", Verdict: verdict(m.AnonFlat)})
		}
	} else {
		add(row{What: "issuer RSS", Value: missing, Target: "≤ 64 MiB", Verdict: "MISSING"})
	}

	// 9. Browser.
	if s, ok := r.get("web.BenchmarkScanToVerdict", "ms/op"); ok {
		x := row{What: "scan to verdict in Chromium (wasm decode + verify + render)", Value: fmt.Sprintf("%.1f ms", s), Verdict: "info"}
		if d, ok := r.get("web.BenchmarkScanToVerdict", "decode-ms/frame"); ok {
			x.Against = fmt.Sprintf("decode %.1f ms/frame", d)
		}
		add(x)
	} else {
		add(row{What: "scan to verdict in Chromium", Value: missing + " (web BenchmarkScanToVerdict)", Verdict: "MISSING"})
	}
	return out
}

func printRows(w io.Writer, rs []row) {
	head := row{"figure", "measured", "against (same run)", "ratio", "target", "verdict"}
	all := append([]row{head}, rs...)
	width := make([]int, 6)
	cells := func(x row) []string { return []string{x.What, x.Value, x.Against, x.Ratio, x.Target, x.Verdict} }
	for _, x := range all {
		for i, c := range cells(x) {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for n, x := range all {
		var b strings.Builder
		for i, c := range cells(x) {
			b.WriteString(c)
			if i < 5 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if n == 0 {
			total := 0
			for _, wd := range width {
				total += wd + 2
			}
			fmt.Fprintln(w, strings.Repeat("-", total-2))
		}
	}
}
