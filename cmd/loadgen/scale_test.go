package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseStatReadsUtimePlusStime(t *testing.T) {
	// A command name with a space and a parenthesis, as the kernel allows.
	line := "4242 (iss uer) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0\n"
	got, err := parseStat(line)
	if err != nil || got != (cpuTicks{user: 1234, system: 567}) {
		t.Fatalf("got %+v, %v; want 1234 and 567", got, err)
	}
	later := cpuTicks{user: 1434, system: 617}
	if d, u, s := later.sub(got), later.userSince(got), later.systemSince(got); d != 2500*time.Millisecond || u != 2*time.Second || s != 500*time.Millisecond {
		t.Fatalf("250 ticks = %s (user %s, system %s), want 2.5s (2s, 0.5s)", d, u, s)
	}
	for in, want := range map[string]string{
		"4242 issuer S 1":                  "no command name",
		"4242 (issuer) S 1 2 3":            "fields after the command name, want at least 13",
		"1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 5": "/proc stat: strconv.ParseInt",
	} {
		if _, err := parseStat(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

func TestBareCostIsMeasuredOnThisThread(t *testing.T) {
	atts, err := presign(keyOf(5), "demo-lab", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := measureBare(keyOf(5), atts[0])
	if err != nil {
		t.Fatal(err)
	}
	// Ed25519 on any machine this runs on: a few µs to a few ms.
	if c.sign < 1 || c.sign > 5000 || c.verify < 1 || c.verify > 5000 {
		t.Fatalf("bare cost %+v µs", c)
	}
	if _, err := measureBare(keyOf(6), atts[0]); err == nil || err.Error() != "bare: the attestation does not verify" {
		t.Fatalf("wrong key: %v", err)
	}
	var cpu CPU
	cpu.IssuerPerRedemptionUs = 1300
	cpu.setBare(bareCost{sign: 20, verify: 50}, bareCost{sign: 25, verify: 50, rounds: 9}, bareCost{sign: 30, verify: 50}, 24)
	// before: 24×20 + 2×50 = 580; during: 24×25 + 100 = 700; after: 24×30 + 100 = 820.
	if cpu.BareBeforeUs != 580 || cpu.BareAfterUs != 820 || cpu.BarePerRedemption != 700 || cpu.Ratio != 1300.0/700 || cpu.BareSamples != 9 {
		t.Fatalf("%+v", cpu)
	}
	calls, err := newBareCalls(keyOf(5), atts[0])
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	close(stop)
	got := <-bareDuring(calls, stop)
	if got.err != nil || got.c.rounds != 1 || got.c.sign <= 0 || got.c.verify <= 0 {
		t.Fatalf("a load shorter than one tick: %+v", got)
	}
}

func TestPhasesSplitByDeadlineAndDrop(t *testing.T) {
	s := time.Second
	loadStart := time.Unix(1000, 0)
	deadline, seen := loadStart.Add(10*s), loadStart.Add(11*s)
	ts := []Timing{
		{Start: s, Latency: 100 * time.Millisecond},                           // warm-up: neither
		{Start: 3 * s, Latency: 200 * time.Millisecond},                       // no sweep
		{Start: 9 * s, Latency: 300 * time.Millisecond},                       // no sweep
		{Start: 9*s + 900*time.Millisecond, Latency: 500 * time.Millisecond},  // in flight at the deadline: sweep
		{Start: 10*s + 500*time.Millisecond, Latency: 900 * time.Millisecond}, // sweep
		{Start: 11*s + 100*time.Millisecond, Latency: 50 * time.Millisecond},  // after the drop: neither
	}
	a, b := phases(ts, loadStart, deadline, seen)
	if a.Requests != 2 || a.Max != 300 || a.Seconds != 8 {
		t.Fatalf("no sweep %+v", a)
	}
	if b.Requests != 2 || b.Max != 900 || b.P50 != 500 || b.Seconds != 1 {
		t.Fatalf("sweep %+v", b)
	}
}

func TestScaleOptionsRefuseBadFlags(t *testing.T) {
	cases := map[string]string{
		"scale":                                 "scale: --issuer BIN is required",
		"scale --issuer x --live 10":            "scale: --live must be between 1000 and 20000000, got 10",
		"scale --issuer x --expiring 1":         "scale: --expiring must be between 0 and 1 (exclusive), got 1",
		"scale --issuer x --epoch 1500ms":       "scale: --epoch must be whole seconds between 1s and 1h, got 1.5s",
		"scale --issuer x --baseline 1s":        "scale: --baseline must be between 5s and 10m, got 1s",
		"scale --issuer x --sweep-interval 1ms": "scale: --sweep-interval must be between 1s and 10s, got 1ms",
		"scale --issuer x --fill-call 0":        "scale: --fill-call must be between 1 and 1000000, got 0",
		"scale --issuer x more":                 `scale: no arguments expected, got "more"`,
	}
	for args, want := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), strings.Fields(args), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "loadgen: "+want+"\n") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", args, code, errb.String(), want)
		}
	}
}

// A whole bench-scale run on a small store, against the real issuer
// binary: the fill is seen in the inventory, the expiring partition is
// swept while the load runs, and the last line has the promised shape.
func TestScaleRunsThroughASweep(t *testing.T) {
	bin := issuerBinary(t)
	o := scaleOptions{issuerBin: bin, live: 3000, expiring: 0.5, concurrency: 4, baseline: 5 * time.Second,
		epoch: time.Second, sweepInterval: time.Second, fillCall: 700, requestTimeout: 30 * time.Second,
		requestsPerSecondCap: 1000, tmpParent: t.TempDir()}
	var out, errb bytes.Buffer
	res, err := scale(context.Background(), o, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if res.Live != 3000 || res.Expiring != 1500 || res.Load.OK == 0 || res.Load.ErrorCount != 0 {
		t.Fatalf("%+v", res)
	}
	if res.NoSweep.Requests < 100 || res.Sweep.Requests < 1 || res.P99Ratio <= 0 || res.SweepSeenAfter < 0 {
		t.Fatalf("phases %+v %+v ratio %v seen after %v", res.NoSweep, res.Sweep, res.P99Ratio, res.SweepSeenAfter)
	}
	if res.StartupMs <= 0 || res.InventoryMedianMs <= 0 || res.Load.RSS == nil || res.Load.RSS.PeakAnon <= 0 {
		t.Fatalf("startup %v inventory %v rss %+v", res.StartupMs, res.InventoryMedianMs, res.Load.RSS)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^bench-scale: live=3000 p99_ratio=\d+\.\d\d rss_mib=\d+\.\d inventory_ms=\d+\.\d{3} startup_ms=\d+$`).MatchString(last) {
		t.Fatalf("last line %q", last)
	}
}
