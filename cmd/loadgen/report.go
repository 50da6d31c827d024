package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// The summary table of `make bench` (loadgen report): each measured
// figure beside its limit. A ratio is shown only where both of its figures
// come from the same run of the same process (a paired benchmark that
// alternates the two calls, or loadgen's CPU per redemption beside the
// bare Ed25519 CPU it measured itself): a ratio of two separate runs
// mostly measures what else the machine was doing in between.
//
//	loadgen report --go bin/bench/go.txt --load bin/bench/load.json
//
// It reads `go test -bench` output (several packages, any -count: the
// median of repeated results is used) with golang.org/x/perf/benchfmt, and
// `loadgen --json` output as the Result it was written from.

const reportUsage = "usage: loadgen report --go FILE [--load FILE]"

func runReport(args []string, w, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	goPath := fs.String("go", "", "file of `go test -bench` output")
	loadPath := fs.String("load", "", "file of `loadgen --json` output (optional)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *goPath == "" || fs.NArg() != 0 {
		return usagef("%s", reportUsage)
	}
	f, err := os.Open(*goPath)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := parseBench(f, *goPath)
	if err != nil {
		return err
	}
	var load *Result
	if *loadPath != "" {
		b, err := os.ReadFile(*loadPath)
		if err != nil {
			return err
		}
		load = new(Result)
		if err := json.Unmarshal(b, load); err != nil {
			return fmt.Errorf("%s: %w", *loadPath, err)
		}
	}
	fmt.Fprintln(w, machine(res))
	printRows(w, rows(res, load))
	return nil
}

// results maps "pkg.BenchmarkName/sub" (pkg relative to the module, the
// -GOMAXPROCS suffix dropped) to unit (as the benchmark wrote it) to the
// values seen.
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

// parseBench reads benchmark results. Lines that are not results (test
// output, "--- FAIL", "ok pkg", the bare name line go test prints before a
// benchmark's sub-benchmarks) are skipped.
func parseBench(r io.Reader, name string) (*results, error) {
	res := &results{m: map[string]map[string][]float64{}}
	br := benchfmt.NewReader(r, name)
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.Result:
			if res.cpu == "" {
				res.cpu = rec.GetConfig("cpu")
			}
			// benchfmt drops the "Benchmark" prefix; the table names benchmarks
			// as their source does.
			key := strings.TrimPrefix(rec.GetConfig("pkg"), module) + ".Benchmark" + benchName(rec.Name)
			if res.m[key] == nil {
				res.m[key] = map[string][]float64{}
			}
			for _, v := range rec.Values {
				// benchfmt tidies units (ns/op becomes sec/op); the table
				// speaks in the units the benchmarks wrote.
				unit, val := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, val = v.OrigUnit, v.OrigValue
				}
				res.m[key][unit] = append(res.m[key][unit], val)
			}
		}
	}
	if err := br.Err(); err != nil {
		return nil, err
	}
	if len(res.m) == 0 {
		return nil, errors.New("no benchmark results in the input")
	}
	return res, nil
}

// benchName is the full name without its -GOMAXPROCS part.
func benchName(n benchfmt.Name) string {
	base, parts := n.Parts()
	var b strings.Builder
	b.Write(base)
	for _, p := range parts {
		if len(p) > 0 && p[0] == '-' {
			continue
		}
		b.Write(p)
	}
	return b.String()
}

// row is one line of the table. An empty Target means no limit.
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

// preloads are the store sizes the store and issuer benchmarks run on:
// empty, and 1M live replay records written before the clock starts.
var preloads = []struct{ sub, label string }{{"/live=0", "empty store"}, {"/live=1M", "1M live records"}}

func rows(r *results, load *Result) []row {
	var out []row
	add := func(x row) { out = append(out, x) }
	ns := func(name string) (float64, bool) { return r.get(name, "ns/op") }

	// 1. Offline verification: the paired benchmark alternates the two
	// calls, so other load on the machine hits both alike.
	v, okV := ns("verifier.BenchmarkVerify")
	bv, okB := ns("verifier.BenchmarkBareEd25519Verify")
	if p, ok := r.get("verifier.BenchmarkVerifyRatio/verify", "verify/bare"); ok {
		x := row{What: "verify one token (string → verdict)", Ratio: fmt.Sprintf("%.2f× (paired)", p), Target: "≤ 1.10", Verdict: verdict(p <= 1.10)}
		if okV && okB {
			x.Value, x.Against = dur(v), "bare ed25519.Verify "+dur(bv)
		}
		add(x)
	} else {
		add(row{What: "verify one token (string → verdict)", Value: missing, Target: "≤ 1.10", Verdict: "MISSING"})
	}

	// 2. QR PNG → verdict: for scale only, beside a verification measured
	// in another run, so no ratio.
	if q, ok := ns("issuer.BenchmarkQRDecodeVerify"); ok {
		x := row{What: "QR PNG 512 px → verdict (decode + verify)", Value: dur(q), Verdict: "info"}
		if okB {
			x.Against = "(bare ed25519.Verify " + dur(bv) + ", another run)"
		}
		add(x)
	} else {
		add(row{What: "QR PNG 512 px → verdict (decode + verify)", Value: missing, Verdict: "MISSING"})
	}

	// 3. Redemption in-process vs its bare signatures, paired.
	sigs, _ := r.get("issuer.BenchmarkRedeem", "sigs/op")
	if p, ok := r.get("issuer.BenchmarkRedeemRatio", "redeem/bare"); ok {
		x := row{What: fmt.Sprintf("redeem 1 attestation → %.0f tokens, one at a time", sigs), Ratio: fmt.Sprintf("%.2f× (paired)", p), Target: "≤ 1.3", Verdict: verdict(p <= 1.3)}
		if rd, ok := ns("issuer.BenchmarkRedeem"); ok {
			x.Value = dur(rd)
		}
		if o, ok := r.get("issuer.BenchmarkRedeemRatio", "overhead-µs"); ok {
			x.Against = fmt.Sprintf("%.0f× ed25519.Sign, alternating; %.0f µs more", sigs, o)
		}
		add(x)
	} else {
		add(row{What: "redeem 1 attestation, one at a time", Value: missing, Target: "≤ 1.3", Verdict: "MISSING"})
	}
	for _, pl := range preloads {
		what := "redeem, 64 at once (in-process), " + pl.label
		p, ok := r.get("issuer.BenchmarkRedeemParallelRatio"+pl.sub, "redeem/bare")
		if !ok {
			add(row{What: what, Value: missing, Target: "≤ 1.3", Verdict: "MISSING"})
			continue
		}
		rps, _ := r.get("issuer.BenchmarkRedeemParallelRatio"+pl.sub, "redemptions/s")
		add(row{What: what, Value: fmt.Sprintf("%.0f redemptions/s", rps), Against: "rounds of bare signatures, 64 at once, alternating",
			Ratio: fmt.Sprintf("%.2f× (paired)", p), Target: "≤ 1.3", Verdict: verdict(p <= 1.3)})
	}

	// 4. Over HTTP: the issuer's own CPU per redemption beside the bare
	// Ed25519 CPU the same loadgen run measured.
	switch {
	case load == nil:
		add(row{What: "HTTP: issuer CPU per redemption (loadgen)", Value: missing, Target: "≤ 1.3", Verdict: "MISSING"})
	case load.CPU == nil || load.CPU.Ratio == 0:
		add(row{What: "HTTP: issuer CPU per redemption (loadgen)", Value: missing + " (no issuer pid or no bare measure)", Target: "≤ 1.3", Verdict: "MISSING"})
	default:
		c := load.CPU
		add(row{What: fmt.Sprintf("HTTP: issuer CPU per redemption (%d clients, 127.0.0.1)", load.Concurrency),
			Value:   fmt.Sprintf("%.0f µs", c.IssuerPerRedemptionUs),
			Against: fmt.Sprintf("bare %.0f× Sign + %d× Verify %.0f µs, timed during the load (quiet: %.0f before, %.0f after)", c.BareSigns, c.BareVerifies, c.BarePerRedemption, c.BareBeforeUs, c.BareAfterUs),
			Ratio:   fmt.Sprintf("%.2f×", c.Ratio), Target: "≤ 1.3", Verdict: verdict(c.Ratio <= 1.3)})
	}
	if load != nil {
		add(row{What: "  throughput and latency under that load", Value: fmt.Sprintf("%.0f/s; p50 %.1f ms, p99 %.1f ms, max %.0f ms", load.RedemptionsPerS, load.LatencyMs.P50, load.LatencyMs.P99, load.LatencyMs.Max),
			Against: "wall clock: depends on the machine's other load", Verdict: "info"})
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
	if p, ok := r.get("issuer.BenchmarkHTTPRatio", "http/inprocess"); ok {
		h, _ := r.get("issuer.BenchmarkHTTPRatio", "http-redemptions/s")
		i, _ := r.get("issuer.BenchmarkHTTPRatio", "inprocess-redemptions/s")
		add(row{What: "  rounds of 256 over HTTP vs in-process, one issuer", Value: fmt.Sprintf("%.0f/s", h), Against: fmt.Sprintf("in-process %.0f/s, alternating", i),
			Ratio: fmt.Sprintf("%.2f× (paired)", p), Verdict: "info"})
	}
	for _, pl := range preloads {
		if st, ok := r.get("issuer/boltstore.BenchmarkRedeemParallel"+pl.sub+"/delay=2ms", "records/s"); ok {
			add(row{What: "  store alone, 64 writers, 2 ms batch delay, " + pl.label, Value: fmt.Sprintf("%.0f records/s", st), Verdict: "info"})
		}
	}

	// 5. QR rendering vs a signature, paired.
	if p, ok := r.get("qr.BenchmarkPNGRatio", "png/sign"); ok {
		x := row{What: "render a token as QR PNG 512 px (go-qrcode)", Ratio: fmt.Sprintf("%.0f× ed25519.Sign (paired)", p), Verdict: "info: not on the redemption path"}
		if png, ok := ns("qr.BenchmarkPNG"); ok {
			x.Value = dur(png)
		}
		add(x)
	} else {
		add(row{What: "render a token as QR PNG", Value: missing, Verdict: "MISSING"})
	}

	// 6. Sweep.
	if s, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "records/s"); ok {
		x := row{What: "sweep 1M expired replay records", Value: fmt.Sprintf("%.0f records/s", s), Verdict: "info"}
		if d, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "delete-only-records/s"); ok {
			x.Against = fmt.Sprintf("delete only %.0f records/s", d)
		}
		if c, ok := r.get("issuer/boltstore.BenchmarkSweep1M", "compact-ms"); ok {
			x.Against += fmt.Sprintf(", compaction %.0f ms", c)
		}
		add(x)
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
		kib := func(v int64) float64 { return float64(v) / 1024 }
		add(row{What: "issuer RSS at rest", Value: fmt.Sprintf("%.1f MiB", kib(m.Rest)), Against: fmt.Sprintf("anon %.1f MiB, mapped files %.1f MiB", kib(m.RestAnon), kib(m.RestFile)), Target: "≤ 64 MiB", Verdict: verdict(kib(m.Rest) <= 64)})
		flat := "flat"
		if !m.Flat {
			flat = "GROWING"
		}
		add(row{What: "issuer RSS under load (peak)", Value: fmt.Sprintf("%.1f MiB", kib(m.Peak)),
			Against: fmt.Sprintf("VmRSS halves %.1f → %.1f MiB (%+.1f%%, %s)", m.FirstHalfAvg/1024, m.SecondHalfAvg/1024, m.GrowthPercent, flat),
			Target:  "≤ 64 MiB", Verdict: verdict(kib(m.Peak) <= 64 && (m.Flat || m.AnonFlat))})
		aflat := "flat"
		if !m.AnonFlat {
			aflat = "GROWING"
		}
		// VmRSS counts the mapped bbolt files, which grow with the replay
		// records held until their deadline; RssAnon is the process's own
		// memory, where a leak would show.
		add(row{What: "  of which anon (heap, stacks)", Value: fmt.Sprintf("peak %.1f MiB, halves %.1f → %.1f MiB", kib(m.PeakAnon), m.AnonFirstHalfAvg/1024, m.AnonSecondHalfAvg/1024),
			Against: fmt.Sprintf("%+.1f%%, %s; mapped files at end %.1f MiB", m.AnonGrowthPercent, aflat, kib(m.EndFile)), Target: "flat", Verdict: verdict(m.AnonFlat)})
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
