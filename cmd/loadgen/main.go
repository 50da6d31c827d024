// Command loadgen sends a bounded burst of redemptions to an issuer on this
// machine and reports throughput, latency, errors and the issuer's memory.
//
// It refuses any target that is not loopback. Attestations are signed
// before the clock starts, so their signing cost is not measured.
//
//	loadgen --issuer bin/issuer                       start an issuer on a temp dir, load it, stop it
//	loadgen --url http://127.0.0.1:8080 --key DIR/demo-attester.key --pid PID
//	loadgen scale --issuer bin/issuer --live 1000000  the issuer at city scale (make bench-scale)
//	loadgen cluster --issuer bin/issuer                replicas on etcd and a Redis Cluster (make bench-cluster)
//	loadgen report --go go.txt --load load.json       the summary table of make bench
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/healthcode/healthcode/internal/keyfile"
)

const usage = `loadgen: bounded redemption load against an issuer on this machine (loopback only)

Usage:
  loadgen --issuer BIN [flags]                      start BIN serve on a fresh temp dir (demo attester,
                                                    rate limits off, 127.0.0.1, free port), load it, stop it
  loadgen --url http://127.0.0.1:PORT --key FILE [--pid PID] [flags]
                                                    load a running issuer; --pid samples its memory and CPU
  loadgen scale --issuer BIN [--live N] [flags]     fill a store to N live records, load the issuer on it
                                                    through a sweep (make bench-scale; 'loadgen scale --help')
  loadgen cluster --issuer BIN [--replicas 3]      replicas on a local etcd and Redis Cluster: throughput, p99,
                                                    CPU and store requests per redemption (make bench-cluster;
                                                    'loadgen cluster --help')
  loadgen report --go FILE [--load FILE]            the summary table of make bench, from go test -bench
                                                    output and loadgen --json

Flags:
`

// Bounds on what one run may ask for.
const (
	maxConcurrency = 4096
	maxRequests    = 2_000_000
	maxDuration    = 30 * time.Minute
	// autoRate sizes the pre-signed pool when --requests is not given: more
	// redemptions per second than two cores sustain, so the clock, not the
	// pool, ends the run.
	autoRate = 4000
)

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// errFailed marks a run that completed with failed requests: the report
// was printed, the exit status says so.
var errFailed = errors.New("some requests failed")

type options struct {
	url, keyPath, issuerBin, attester string
	pid, concurrency, requests        int
	duration, timeout                 time.Duration
	jsonOut, keep                     bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := runErr(ctx, args, stdout, stderr)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "loadgen: %s\n(run 'loadgen --help' for usage)\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.issuerBin, "issuer", "", "issuer binary to start and stop (exclusive with --url)")
	fs.StringVar(&o.url, "url", "", "base URL of a running issuer (loopback only)")
	fs.StringVar(&o.keyPath, "key", "", "attester private key file (with --url; the issuer's DIR/demo-attester.key)")
	fs.StringVar(&o.attester, "attester", demoAttesterID, "attester id the key is registered under")
	fs.IntVar(&o.pid, "pid", 0, "issuer process id whose VmRSS to sample (with --url)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "concurrent requests")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long to send requests")
	fs.IntVar(&o.requests, "requests", 0, fmt.Sprintf("attestations to pre-sign, the most requests sent (default: %d per second of --duration)", autoRate))
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	fs.BoolVar(&o.keep, "keep", false, "with --issuer: keep the temp data dir and log")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usagef("%v", err)
	}
	if fs.NArg() != 0 {
		return o, usagef("no arguments expected, got %q", fs.Arg(0))
	}
	switch {
	case (o.issuerBin == "") == (o.url == ""):
		return o, usagef("give exactly one of --issuer BIN and --url URL")
	case o.issuerBin != "" && (o.keyPath != "" || o.pid != 0):
		return o, usagef("--key and --pid go with --url; --issuer finds both itself")
	case o.url != "" && o.keyPath == "":
		return o, usagef("--url needs --key (the attester key the issuer trusts)")
	case o.url != "" && o.keep:
		return o, usagef("--keep goes with --issuer")
	case o.pid < 0:
		return o, usagef("--pid must not be negative, got %d", o.pid)
	case o.concurrency < 1 || o.concurrency > maxConcurrency:
		return o, usagef("--concurrency must be between 1 and %d, got %d", maxConcurrency, o.concurrency)
	case o.duration < 100*time.Millisecond || o.duration > maxDuration:
		return o, usagef("--duration must be between 100ms and %s, got %s", maxDuration, o.duration)
	case o.requests < 0 || o.requests > maxRequests:
		return o, usagef("--requests must be between 1 and %d, got %d", maxRequests, o.requests)
	case o.timeout <= 0 || o.timeout > time.Minute:
		return o, usagef("--timeout must be between 1ns and 1m, got %s", o.timeout)
	}
	if o.url != "" {
		if _, err := checkTarget(o.url); err != nil {
			return o, usageError{err.Error()}
		}
	}
	if o.requests == 0 {
		o.requests = min(maxRequests, max(1000, int(o.duration.Seconds()*autoRate)))
	}
	return o, nil
}

func runErr(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "scale":
			return runScale(ctx, args[1:], stdout, stderr)
		case "cluster":
			return runCluster(ctx, args[1:], stdout, stderr)
		case "report":
			return runReport(args[1:], stdout, stderr)
		}
	}
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	cfg := Config{URL: o.url, AttesterID: o.attester, Concurrency: o.concurrency, Duration: o.duration,
		Requests: o.requests, Timeout: o.timeout, PID: o.pid, Bare: true}

	var res *Result
	if o.issuerBin != "" {
		res, err = runSpawned(ctx, o, cfg, stderr)
	} else {
		if cfg.Key, err = keyfile.Read(o.keyPath); err != nil {
			return err
		}
		res, err = Run(ctx, cfg)
	}
	if err != nil {
		return err
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printTable(stdout, res)
	}
	if res.ErrorCount > 0 || res.OK == 0 {
		for _, d := range res.transportDetails {
			fmt.Fprintf(stderr, "loadgen: transport error: %s\n", d)
		}
		return fmt.Errorf("%w: %d of %d", errFailed, res.ErrorCount, res.Requests)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// runSpawned starts the issuer on a fresh temp dir, loads it and stops it,
// whatever happens in between.
func runSpawned(ctx context.Context, o options, cfg Config, stderr io.Writer) (_ *Result, err error) {
	tmp, err := os.MkdirTemp("", "loadgen-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(tmp, "issuer.log")
	defer func() {
		if o.keep || err != nil {
			fmt.Fprintf(stderr, "loadgen: issuer data and log kept in %s\n", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()
	p, err := startIssuer(ctx, o.issuerBin, filepath.Join(tmp, "data"), logPath)
	if err != nil {
		return nil, err
	}
	res, err := func() (*Result, error) {
		key, err := p.DemoKey()
		if err != nil {
			return nil, err
		}
		cfg.URL, cfg.Key, cfg.PID = p.URL, key, p.PID()
		return Run(ctx, cfg)
	}()
	if serr := p.Stop(); err == nil && serr != nil {
		err = serr
	}
	if res != nil {
		res.IssuerSpawned = true
	}
	return res, err
}

func mib(kib float64) float64 { return kib / 1024 }

func printTable(w io.Writer, r *Result) {
	pid := ""
	if r.IssuerPID > 0 {
		pid = fmt.Sprintf(" (issuer pid %d)", r.IssuerPID)
	}
	fmt.Fprintf(w, "loadgen: %d workers for %gs against %s%s, GOMAXPROCS %d\n", r.Concurrency, r.DurationSeconds, r.URL, pid, r.GOMAXPROCS)
	row := func(name, format string, a ...any) { fmt.Fprintf(w, "  %-16s %s\n", name, fmt.Sprintf(format, a...)) }
	row("pre-signed", "%d attestations in %.1fs (not measured)", r.Presigned, r.PresignSeconds)
	ended := "time was up"
	if r.Exhausted {
		ended = "ran out of pre-signed attestations: raise --requests"
	}
	row("requests", "%d in %.2fs (%s)", r.Requests, r.ElapsedSeconds, ended)
	row("redemptions/s", "%.1f  (%.1f tokens each, %.0f tokens/s)", r.RedemptionsPerS, r.TokensPerBatch, r.TokensPerS)
	row("latency", "p50 %.1f ms   p99 %.1f ms   max %.1f ms", r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.Max)
	if r.ErrorCount == 0 {
		row("errors", "none")
	} else {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for n, k := range keys {
			parts[n] = fmt.Sprintf("%s: %d", k, r.Errors[k])
		}
		row("errors", "%d  (%s)", r.ErrorCount, strings.Join(parts, ", "))
	}
	if c := r.CPU; c != nil && c.IssuerPerRedemptionUs > 0 {
		row("issuer CPU", "%.0f µs per redemption (%.1f s over the load: user %.1f s, system %.1f s)", c.IssuerPerRedemptionUs, c.IssuerSeconds, c.IssuerUserSeconds, c.IssuerSystemSeconds)
		if c.Ratio > 0 {
			row("", "bare Ed25519 for one redemption (%.0f× Sign, %d× Verify), timed during the load: %.0f µs; ratio %.2f (target ≤ 1.3)",
				c.BareSigns, c.BareVerifies, c.BarePerRedemption, c.Ratio)
			row("", "(the same calls on a quiet loadgen: %.0f µs before the load, %.0f µs after)", c.BareBeforeUs, c.BareAfterUs)
		}
	}
	if m := r.RSS; m != nil {
		row("issuer RSS", "rest %.1f MiB   peak %.1f MiB   end %.1f MiB", mib(float64(m.Rest)), mib(float64(m.Peak)), mib(float64(m.End)))
		verdict := "flat"
		switch {
		case !m.Flat && m.AnonFlat:
			// The mapped bbolt file grows with the records held.
			verdict = "rising with the mapped files; anon memory flat (below)"
		case !m.Flat:
			verdict = "GROWING"
		}
		row("", "first half avg %.1f MiB, second half avg %.1f MiB (%+.1f%%, %d samples): %s",
			mib(m.FirstHalfAvg), mib(m.SecondHalfAvg), m.GrowthPercent, len(m.Samples), verdict)
		verdict = "flat"
		if !m.AnonFlat {
			verdict = "GROWING"
		}
		row("  of which anon", "rest %.1f MiB, halves %.1f → %.1f MiB (%+.1f%%): %s; mapped files (bbolt) at end %.1f MiB",
			mib(float64(m.RestAnon)), mib(m.AnonFirstHalfAvg), mib(m.AnonSecondHalfAvg), m.AnonGrowthPercent, verdict, mib(float64(m.EndFile)))
	}
}
