package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/preload"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/policy"
)

const scaleUsage = `loadgen scale: the issuer at city scale (make bench-scale), loopback only

Usage:
  loadgen scale --issuer BIN [--live N] [flags]

Fills a fresh data directory to N live replay records through the store's
own API (issuer/boltstore), starts BIN serve on it and, in one run under
--concurrency HTTP redemptions, measures: p99 redemption latency while a
sweep drops expired partitions against p99 without a sweep; the issuer's
RssAnon at rest and under load, with RssFile beside it; GET /v1/inventory
median latency; start-up time to /healthz. Its last line is
  bench-scale: live=N p99_ratio=R rss_mib=M inventory_ms=T startup_ms=S
with rss_mib the peak RssAnon.

Flags:
`

// Bounds of one scale run.
const (
	maxLive          = 20_000_000
	scaleAttester    = "scale-lab"
	inventoryGets    = 51
	sweepPoll        = 100 * time.Millisecond
	sweepTail        = 2 * time.Second // load goes on after the drop is seen
	sweepWait        = 60 * time.Second
	warmUp           = 2 * time.Second // first seconds of load: connections, caches
	scaleSampleEvery = 250 * time.Millisecond
)

type scaleOptions struct {
	issuerBin            string
	live, concurrency    int
	fillCall             int
	expiring             float64
	baseline, epoch      time.Duration
	sweepInterval        time.Duration
	keep                 bool
	jsonPath             string
	requestTimeout       time.Duration
	requestsPerSecondCap int
	tmpParent            string // where the temp dir goes ("": the system's)
}

func parseScaleOptions(args []string, stderr io.Writer) (scaleOptions, error) {
	var o scaleOptions
	fs := flag.NewFlagSet("loadgen scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, scaleUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.issuerBin, "issuer", "", "issuer binary to start and stop")
	fs.IntVar(&o.live, "live", 1_000_000, "live replay records to fill the store with")
	fs.Float64Var(&o.expiring, "expiring", 0.25, "fraction of the live records whose partition expires during the run")
	fs.IntVar(&o.concurrency, "concurrency", 64, "concurrent HTTP redemptions")
	fs.DurationVar(&o.baseline, "baseline", 20*time.Second, "least time of load without a sweep, before the expiry")
	fs.DurationVar(&o.epoch, "epoch", 10*time.Second, "replay partition span the fresh store is created with")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", time.Second, "retention.sweep_interval of the issuer's policy")
	fs.IntVar(&o.fillCall, "fill-call", 20_000, "replay keys per store Redeem call while filling")
	fs.DurationVar(&o.requestTimeout, "timeout", 30*time.Second, "per-request timeout")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp data dir and logs")
	fs.StringVar(&o.jsonPath, "json", "", "also write the result as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usagef("%v", err)
	}
	// Above what two cores redeem (about 1,500/s quiet): the pool, not the
	// clock, would otherwise end a fast run; signing more is time lost.
	o.requestsPerSecondCap = 2500
	switch {
	case fs.NArg() != 0:
		return o, usagef("scale: no arguments expected, got %q", fs.Arg(0))
	case o.issuerBin == "":
		return o, usagef("scale: --issuer BIN is required")
	case o.live < 1000 || o.live > maxLive:
		return o, usagef("scale: --live must be between 1000 and %d, got %d", maxLive, o.live)
	case !(o.expiring > 0 && o.expiring < 1):
		return o, usagef("scale: --expiring must be between 0 and 1 (exclusive), got %g", o.expiring)
	case o.concurrency < 1 || o.concurrency > maxConcurrency:
		return o, usagef("scale: --concurrency must be between 1 and %d, got %d", maxConcurrency, o.concurrency)
	case o.baseline < 5*time.Second || o.baseline > 10*time.Minute:
		return o, usagef("scale: --baseline must be between 5s and 10m, got %s", o.baseline)
	case o.epoch < time.Second || o.epoch%time.Second != 0 || o.epoch > time.Hour:
		return o, usagef("scale: --epoch must be whole seconds between 1s and 1h, got %s", o.epoch)
	case o.sweepInterval < policy.MinSweepInterval || o.sweepInterval > 10*time.Second:
		return o, usagef("scale: --sweep-interval must be between %s and 10s, got %s", policy.MinSweepInterval, o.sweepInterval)
	case o.fillCall < 1 || o.fillCall > 1_000_000:
		return o, usagef("scale: --fill-call must be between 1 and 1000000, got %d", o.fillCall)
	case o.requestTimeout <= 0 || o.requestTimeout > time.Minute:
		return o, usagef("scale: --timeout must be between 1ns and 1m, got %s", o.requestTimeout)
	}
	return o, nil
}

// ScaleResult is what one bench-scale run measured.
type ScaleResult struct {
	Live              int     `json:"live"`
	Expiring          int     `json:"expiring"`
	FillSeconds       float64 `json:"fill_s"`
	FillRecordsPerS   float64 `json:"fill_records_per_s"`
	StartupMs         float64 `json:"startup_ms"`
	InventoryMedianMs float64 `json:"inventory_median_ms"`
	InventoryMaxMs    float64 `json:"inventory_max_ms"`
	// Latency without a sweep (from warm-up to the partition's deadline)
	// and of the requests in flight while the sweep ran (from the
	// deadline to the moment the drop was seen in the inventory).
	NoSweep        PhaseLatency `json:"no_sweep"`
	Sweep          PhaseLatency `json:"sweep"`
	P99Ratio       float64      `json:"p99_ratio"`
	SweepSeenAfter float64      `json:"sweep_seen_after_s"` // from the deadline
	Load           *Result      `json:"load"`
	LoadAverage    string       `json:"load_average"` // /proc/loadavg at the end
}

// PhaseLatency is the latency of one phase's requests, in milliseconds.
type PhaseLatency struct {
	Requests int     `json:"requests"`
	Seconds  float64 `json:"seconds"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	Max      float64 `json:"max"`
}

func runScale(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseScaleOptions(args, stderr)
	if err != nil {
		return err
	}
	_, err = scale(ctx, o, stdout, stderr)
	return err
}

func scale(ctx context.Context, o scaleOptions, stdout, stderr io.Writer) (_ *ScaleResult, err error) {
	tmp, err := os.MkdirTemp(o.tmpParent, "bench-scale-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if o.keep || err != nil {
			fmt.Fprintf(stderr, "bench-scale: data and logs kept in %s\n", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()
	data := filepath.Join(tmp, "data")
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "bench-scale: "+format+"\n", a...) }

	// 1. A fresh store with short partitions, so that one can expire while
	// we watch; then one issuer start to make its keys, admin token, demo
	// attester and a policy that sweeps every --sweep-interval.
	// The key-encryption key, where `issuer serve` looks for it by
	// default: beside the data directory, not in it.
	kekKey, _, err := kek.LoadOrCreate(data + ".kek")
	if err != nil {
		return nil, err
	}
	db, err := boltstore.Open(data, boltstore.Options{Epoch: o.epoch, KEK: kekKey})
	if err != nil {
		return nil, err
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	pol := policy.Default()
	pol.Retention.SweepInterval = policy.Duration(o.sweepInterval)
	polJSON, err := pol.Canonical()
	if err != nil {
		return nil, err
	}
	polPath := filepath.Join(tmp, "policy.json")
	if err := os.WriteFile(polPath, polJSON, 0o600); err != nil {
		return nil, err
	}
	first, err := startIssuer(ctx, o.issuerBin, data, filepath.Join(tmp, "issuer-init.log"), "--policy", polPath)
	if err != nil {
		return nil, err
	}
	key, err := first.DemoKey()
	if serr := first.Stop(); err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}

	// 2. Attestations for the load, signed before anything is measured.
	// The pool bounds the run: at most requestsPerSecondCap a second of
	// its longest possible span.
	span := o.baseline + 2*o.epoch + sweepWait/2
	pool := min(maxRequests, int(span.Seconds())*o.requestsPerSecondCap)
	say("signing %d attestations for the load (not measured)", pool)
	atts, err := presign(key, demoAttesterID, pool, time.Now())
	if err != nil {
		return nil, err
	}

	// 3. The fill, through the store's own API, in large calls.
	res := &ScaleResult{Live: o.live, Expiring: int(math.Round(float64(o.live) * o.expiring))}
	fillStart := time.Now()
	deadline, err := fill(ctx, data, kekKey, o, res.Expiring, say)
	if err != nil {
		return nil, err
	}
	res.FillSeconds = time.Since(fillStart).Seconds()
	res.FillRecordsPerS = float64(o.live) / res.FillSeconds
	if left := time.Until(deadline); left < o.baseline/2 {
		return nil, fmt.Errorf("the fill took longer than planned: the expiring partition's deadline is %s away, want at least %s; rerun with a longer --baseline", left.Round(time.Millisecond), o.baseline/2)
	}

	// 4. The measured start, on the filled directory.
	p, err := startIssuer(ctx, o.issuerBin, data, filepath.Join(tmp, "issuer.log"))
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := p.Stop(); err == nil && serr != nil {
			err = serr
		}
	}()
	res.StartupMs = ms(p.Startup)
	say("issuer started in %.0f ms on %d records", res.StartupMs, o.live)

	client := newClient(2, 5*time.Second)
	defer client.CloseIdleConnections()
	// 5. Inventory at rest, one request at a time.
	var inv []time.Duration
	replayBefore := 0
	for range inventoryGets {
		t := time.Now()
		n, err := replayCount(ctx, client, p.URL)
		if err != nil {
			return nil, err
		}
		inv = append(inv, time.Since(t))
		replayBefore = n
	}
	if replayBefore != o.live {
		return nil, fmt.Errorf("inventory says %d replay records, the fill wrote %d", replayBefore, o.live)
	}
	slices.Sort(inv)
	res.InventoryMedianMs, res.InventoryMaxMs = ms(inv[len(inv)/2]), ms(inv[len(inv)-1])

	// 6. Load until the drop has been seen (or sweepWait after the
	// deadline), the sweep watched through the inventory.
	stop := make(chan struct{})
	var seen time.Time
	watchErr := make(chan error, 1)
	go func() {
		defer close(stop)
		watchErr <- watchSweep(ctx, client, p.URL, deadline, res.Expiring, &seen)
	}()
	cfg := Config{URL: p.URL, Key: key, AttesterID: demoAttesterID, Concurrency: o.concurrency,
		Duration: time.Until(deadline) + sweepWait + sweepTail, Presigned: atts, Timeout: o.requestTimeout,
		PID: p.PID(), Stop: stop, SampleEvery: scaleSampleEvery, KeepTimings: true, Bare: true}
	say("load: %d clients; the partition of %d records expires at %s (in %s)", o.concurrency, res.Expiring,
		deadline.UTC().Format("15:04:05"), time.Until(deadline).Round(time.Second))
	loadStart := time.Now()
	load, err := Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := <-watchErr; err != nil {
		return nil, err
	}
	if load.Exhausted {
		return nil, fmt.Errorf("the load ran out of its %d pre-signed attestations before the sweep was seen", len(atts))
	}
	res.Load = load
	res.SweepSeenAfter = seen.Sub(deadline).Seconds()
	res.NoSweep, res.Sweep = phases(load.Timings, loadStart, deadline, seen)
	if res.NoSweep.Requests < 100 || res.Sweep.Requests < 10 {
		return nil, fmt.Errorf("too few requests to compare: %d without a sweep, %d during it", res.NoSweep.Requests, res.Sweep.Requests)
	}
	res.P99Ratio = res.Sweep.P99 / res.NoSweep.P99
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			res.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	printScale(stdout, res)
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	if load.ErrorCount > 0 {
		return res, fmt.Errorf("%w: %d of %d", errFailed, load.ErrorCount, load.Requests)
	}
	return res, nil
}

// fill writes o.live replay records through boltstore's Redeem, o.fillCall
// keys a call: the long-lived ones first, with hour-rounded deadlines one,
// two and three days ahead (as a city's records spread over their renewal
// periods), then the expiring ones, all with one deadline on an epoch
// boundary, chosen from the rate of the first part so that it falls
// --baseline after the load starts. It returns that deadline.
func fill(ctx context.Context, data string, k *kek.Key, o scaleOptions, expiring int, say func(string, ...any)) (time.Time, error) {
	db, err := boltstore.Open(data, boltstore.Options{KEK: k})
	if err != nil {
		return time.Time{}, err
	}
	defer db.Close()
	longLived := o.live - expiring
	t := time.Now()
	if err := preload.Replay(ctx, db, t, longLived, o.fillCall, scaleAttester, "live-", preload.Spread(t, 3)); err != nil {
		return time.Time{}, err
	}
	rate := float64(longLived) / time.Since(t).Seconds()
	say("filled %d long-lived records in %s (%.0f/s)", longLived, time.Since(t).Round(time.Millisecond), rate)
	// Time still to come before the load starts: the rest of the fill
	// (twice the estimate), closing, the issuer's start and the inventory
	// requests (a few seconds even on a slow store).
	ahead := time.Duration(2*float64(expiring)/rate*float64(time.Second)) + 10*time.Second + o.baseline + warmUp
	deadline := time.Now().Add(ahead).Truncate(o.epoch).Add(o.epoch)
	if err := preload.Replay(ctx, db, time.Now(), expiring, o.fillCall, scaleAttester, "expiring-", func(int) time.Time { return deadline }); err != nil {
		return time.Time{}, err
	}
	say("filled %d records expiring at %s", expiring, deadline.UTC().Format("15:04:05"))
	return deadline, db.Close()
}

// replayCount is the replay_records count of GET /v1/inventory.
func replayCount(ctx context.Context, client *http.Client, base string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/inventory", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("inventory: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, fmt.Errorf("inventory: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("inventory: status %d (%s)", resp.StatusCode, statusKey(resp.StatusCode, raw))
	}
	var inv httpapi.InventoryJSON
	if err := json.Unmarshal(raw, &inv); err != nil {
		return 0, fmt.Errorf("inventory: %w", err)
	}
	for _, c := range inv.Categories {
		if c.Name == issuer.CategoryReplay {
			return c.Count, nil
		}
	}
	return 0, errors.New("inventory: no replay_records category")
}

// watchSweep waits for the deadline, then polls the inventory until the
// replay count has fallen by most of the expiring records (redemptions
// add records meanwhile), and lets the load go on for sweepTail more.
func watchSweep(ctx context.Context, client *http.Client, base string, deadline time.Time, expiring int, seen *time.Time) error {
	select {
	case <-time.After(time.Until(deadline)):
	case <-ctx.Done():
		return ctx.Err()
	}
	high := 0
	tick := time.NewTicker(sweepPoll)
	defer tick.Stop()
	for time.Since(deadline) < sweepWait {
		n, err := replayCount(ctx, client, base)
		if err != nil {
			return err
		}
		high = max(high, n)
		if n <= high-expiring*9/10 {
			*seen = time.Now()
			select {
			case <-time.After(sweepTail):
			case <-ctx.Done():
			}
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("no sweep dropped the %d expired records within %s of their deadline", expiring, sweepWait)
}

// phases splits the answered requests: without a sweep, those that
// started after the warm-up and ended before the deadline; during the
// sweep, those in flight at any moment between the deadline and the drop
// being seen.
func phases(ts []Timing, loadStart, deadline, seen time.Time) (noSweep, sweep PhaseLatency) {
	d, s := deadline.Sub(loadStart), seen.Sub(loadStart)
	var a, b []time.Duration
	for _, t := range ts {
		end := t.Start + t.Latency
		switch {
		case t.Start >= warmUp && end < d:
			a = append(a, t.Latency)
		case t.Start <= s && end >= d:
			b = append(b, t.Latency)
		}
	}
	return phase(a, d-warmUp), phase(b, s-d)
}

func phase(lat []time.Duration, span time.Duration) PhaseLatency {
	l := latency(lat)
	return PhaseLatency{Requests: len(lat), Seconds: span.Seconds(), P50: l.P50, P99: l.P99, Max: l.Max}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func printScale(w io.Writer, r *ScaleResult) {
	row := func(name, format string, a ...any) { fmt.Fprintf(w, "  %-22s %s\n", name, fmt.Sprintf(format, a...)) }
	l := r.Load
	fmt.Fprintf(w, "bench-scale: %d live replay records (%d of them expiring during the run), %d clients, load average %s\n",
		r.Live, r.Expiring, l.Concurrency, r.LoadAverage)
	row("fill (store API)", "%.1f s, %.0f records/s (not the hot path)", r.FillSeconds, r.FillRecordsPerS)
	row("start-up to /healthz", "%.0f ms (page cache warm from the fill)", r.StartupMs)
	row("GET /v1/inventory", "median %.3f ms, max %.3f ms (%d requests at rest, one at a time)", r.InventoryMedianMs, r.InventoryMaxMs, inventoryGets)
	row("without a sweep", "p50 %.1f ms  p99 %.1f ms  max %.1f ms  (%d requests over %.1f s)", r.NoSweep.P50, r.NoSweep.P99, r.NoSweep.Max, r.NoSweep.Requests, r.NoSweep.Seconds)
	row("during the sweep", "p50 %.1f ms  p99 %.1f ms  max %.1f ms  (%d requests in flight over the %.2f s from the deadline to the drop seen)",
		r.Sweep.P50, r.Sweep.P99, r.Sweep.Max, r.Sweep.Requests, r.Sweep.Seconds)
	row("p99 ratio", "%.2f (target ≤ 1.5 at 5M)", r.P99Ratio)
	row("redemptions", "%d answered, %.0f/s, %d errors", l.OK, l.RedemptionsPerS, l.ErrorCount)
	if c := l.CPU; c != nil && c.Ratio > 0 {
		row("issuer CPU", "%.0f µs per redemption (user %.1f s, system %.1f s; includes the sweep and the inventory polls), %.2f× the bare Ed25519 calls timed during the load (%.0f µs)",
			c.IssuerPerRedemptionUs, c.IssuerUserSeconds, c.IssuerSystemSeconds, c.Ratio, c.BarePerRedemption)
	}
	if m := l.RSS; m != nil {
		row("issuer RssAnon", "rest %.1f MiB, peak under load %.1f MiB (target ≤ 128 MiB at 5M)", mib(float64(m.RestAnon)), mib(float64(m.PeakAnon)))
		row("issuer RssFile", "rest %.1f MiB, peak %.1f MiB (mapped store files; the kernel may drop them)", mib(float64(m.RestFile)), mib(float64(m.PeakFile)))
	}
	fmt.Fprintf(w, "bench-scale: live=%d p99_ratio=%.2f rss_mib=%.1f inventory_ms=%.3f startup_ms=%.0f\n",
		r.Live, r.P99Ratio, peakAnonMiB(l), r.InventoryMedianMs, r.StartupMs)
}

func peakAnonMiB(l *Result) float64 {
	if l.RSS == nil {
		return 0
	}
	return mib(float64(l.RSS.PeakAnon))
}
