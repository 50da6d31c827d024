package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/httpapi"
)

// Config is one bounded load run.
type Config struct {
	URL string // base URL of the issuer; loopback only
	// More are further issuers (replicas of one deployment, loopback
	// only): requests go round-robin over URL and these.
	More        []string
	Key         ed25519.PrivateKey
	AttesterID  string
	Concurrency int
	Duration    time.Duration // no request starts after this
	Requests    int           // attestations pre-signed: the most requests sent
	// Presigned, if not empty, replaces the pre-signing: these are sent
	// (bench-scale signs them before it fills the store).
	Presigned []string
	Timeout   time.Duration // per request
	PID       int           // issuer process for memory and CPU sampling; 0: none
	// OnOK, if set, is called with every attestation answered 200 (the
	// crash test keeps them).
	OnOK func(att string)
	// Stop, if not nil, ends the run early when closed (bench-scale ends
	// its run once the sweep has been seen).
	Stop <-chan struct{}
	// SampleEvery is how often the issuer's memory is read (default 1s).
	SampleEvery time.Duration
	// KeepTimings keeps every answered request's start and latency in
	// Result.Timings (bench-scale splits them by phase).
	KeepTimings bool
	// Bare measures, in this run, the CPU of the bare Ed25519 calls one
	// redemption needs, to stand beside the issuer's CPU per redemption.
	Bare bool
}

// Result is what a run measured. Sizes are KiB as /proc reports them.
type Result struct {
	URL             string         `json:"url"`
	More            []string       `json:"more_urls,omitempty"`
	Concurrency     int            `json:"concurrency"`
	DurationSeconds float64        `json:"duration_s"`
	ElapsedSeconds  float64        `json:"elapsed_s"`
	Presigned       int            `json:"presigned"`
	PresignSeconds  float64        `json:"presign_s"`
	Exhausted       bool           `json:"exhausted"` // every pre-signed attestation was sent before the time was up
	Requests        int            `json:"requests"`
	OK              int            `json:"ok"`
	Errors          map[string]int `json:"errors"` // "409 already_redeemed", "transport", ...
	ErrorCount      int            `json:"error_count"`
	RedemptionsPerS float64        `json:"redemptions_per_s"`
	TokensPerS      float64        `json:"tokens_per_s"`
	TokensPerBatch  float64        `json:"tokens_per_batch"`
	LatencyMs       Latency        `json:"latency_ms"`
	RSS             *Memory        `json:"rss_kib,omitempty"`
	CPU             *CPU           `json:"cpu,omitempty"`
	IssuerPID       int            `json:"issuer_pid,omitempty"`
	IssuerSpawned   bool           `json:"issuer_spawned,omitempty"`
	GOMAXPROCS      int            `json:"gomaxprocs"`
	// Timings, with Config.KeepTimings: every answered request, in no
	// particular order.
	Timings          []Timing `json:"-"`
	transportDetails []string
}

// Timing is one answered request: when it started (since the run's
// start) and how long it took.
type Timing struct {
	Start, Latency time.Duration
}

// Latency is over every request that got an HTTP answer.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Memory is the issuer's VmRSS: once before the load, every second during
// it, and once after.
type Memory struct {
	Rest          int64   `json:"rest"`
	Peak          int64   `json:"peak"`
	End           int64   `json:"end"`
	FirstHalfAvg  float64 `json:"first_half_avg"`
	SecondHalfAvg float64 `json:"second_half_avg"`
	GrowthPercent float64 `json:"growth_percent"` // second half vs first half
	Flat          bool    `json:"flat"`
	Samples       []int64 `json:"samples"` // VmRSS, one per Config.SampleEvery
	// The same for RssAnon, the process's own memory (heap, stacks),
	// without the mapped bbolt file that grows with the records it holds.
	RestAnon          int64   `json:"rest_anon"`
	PeakAnon          int64   `json:"peak_anon"`
	EndAnon           int64   `json:"end_anon"`
	RestFile          int64   `json:"rest_file"`
	PeakFile          int64   `json:"peak_file"`
	EndFile           int64   `json:"end_file"`
	AnonFirstHalfAvg  float64 `json:"anon_first_half_avg"`
	AnonSecondHalfAvg float64 `json:"anon_second_half_avg"`
	AnonGrowthPercent float64 `json:"anon_growth_percent"`
	AnonFlat          bool    `json:"anon_flat"`
}

// flatTolerance is how much the second half's average RSS may exceed the
// first half's and still be called flat: GC pacing moves RSS by a few
// percent from second to second, a leak keeps climbing.
const flatTolerance = 0.10

// maxBody bounds what is read of an answer (a batch is a few KiB).
const maxBody = 1 << 20

// checkTarget parses u and refuses anything but plain HTTP to a loopback
// host: this tool must never be pointed at someone else's server.
func checkTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--url: %v", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("--url: scheme must be http, got %q", u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--url: want only scheme, host and port (e.g. http://127.0.0.1:8080), got %q", raw)
	}
	host := u.Hostname()
	if !loopbackHost(host) {
		return nil, fmt.Errorf("--url: target host %q is not loopback; loadgen sends traffic only to 127.0.0.0/8, ::1 or localhost", host)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("--url: give a port (e.g. http://127.0.0.1:8080)")
	}
	u.Path = ""
	return u, nil
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return false
	}
	return ip.Unmap().IsLoopback()
}

// loopbackOnly refuses, at connect time, any resolved address that is not
// loopback: "localhost" could be mapped elsewhere by /etc/hosts.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("loadgen: refusing to connect to %q: not an IP address", address)
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("loadgen: refusing to connect to %s: not a loopback address", ap.Addr())
	}
	return nil
}

func newClient(conc int, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: loopbackOnly}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConns:        conc,
			MaxIdleConnsPerHost: conc,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		// The API never redirects; following one could leave loopback.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// presign signs n fresh attestations on every core, before the clock
// starts.
func presign(key ed25519.PrivateKey, attester string, n int, now time.Time) ([]string, error) {
	atts := make([]string, n)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				var id [12]byte
				if _, err := rand.Read(id[:]); err != nil {
					errs[w] = err
					return
				}
				s, err := attestation.Sign(key, attestation.Claims{
					Attester: attester, Kind: attestation.TestNegative,
					At: now.Add(-time.Hour).Unix(), Expires: now.Add(24 * time.Hour).Unix(),
					ID: base64.RawURLEncoding.EncodeToString(id[:]),
				})
				if err != nil {
					errs[w] = err
					return
				}
				atts[i] = s
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sign attestations: %w", err)
	}
	return atts, nil
}

type workerStats struct {
	lat     []time.Duration
	timings []Timing
	ok      int
	tokens  int
	errs    map[string]int
	detail  []string // first few transport errors, for the operator
}

// Run pre-signs cfg.Requests attestations, then sends them from
// cfg.Concurrency workers until the time is up or they run out.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	base, err := checkTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	endpoints := []string{base.String() + "/v1/tokens"}
	for _, u := range cfg.More {
		b, err := checkTarget(u)
		if err != nil {
			return nil, err
		}
		endpoints = append(endpoints, b.String()+"/v1/tokens")
	}
	if len(cfg.Presigned) > 0 {
		cfg.Requests = len(cfg.Presigned)
	}
	if cfg.Concurrency < 1 || cfg.Requests < 1 || cfg.Duration <= 0 || cfg.Timeout <= 0 {
		return nil, errors.New("loadgen: concurrency, requests, duration and timeout must be positive")
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("loadgen: no attester key")
	}
	res := &Result{URL: base.String(), More: cfg.More, Concurrency: cfg.Concurrency, DurationSeconds: cfg.Duration.Seconds(),
		Presigned: cfg.Requests, IssuerPID: cfg.PID, GOMAXPROCS: runtime.GOMAXPROCS(0), Errors: map[string]int{}}

	atts := cfg.Presigned
	if len(atts) == 0 {
		t := time.Now()
		if atts, err = presign(cfg.Key, cfg.AttesterID, cfg.Requests, t); err != nil {
			return nil, err
		}
		res.PresignSeconds = time.Since(t).Seconds()
	}

	client := newClient(cfg.Concurrency, cfg.Timeout)
	defer client.CloseIdleConnections()

	var sampler *rssSampler
	if cfg.PID > 0 {
		rest, err := readRSS(cfg.PID)
		if err != nil {
			return nil, fmt.Errorf("issuer memory: %w", err)
		}
		sampler = startRSS(cfg.PID, rest, cmp.Or(cfg.SampleEvery, time.Second))
	}
	var bareBefore *bareCost
	var calls *bareCalls
	if cfg.Bare {
		if bareBefore, err = measureBare(cfg.Key, atts[0]); err != nil {
			return nil, err
		}
		if calls, err = newBareCalls(cfg.Key, atts[0]); err != nil {
			return nil, err
		}
	}
	var cpuBefore cpuTicks
	if cfg.PID > 0 {
		if cpuBefore, err = readCPU(cfg.PID); err != nil {
			return nil, fmt.Errorf("issuer CPU: %w", err)
		}
	}

	var next atomic.Int64
	stats := make([]workerStats, cfg.Concurrency)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	stopBare := make(chan struct{})
	var bareLoad <-chan bareResult
	if calls != nil {
		bareLoad = bareDuring(calls, stopBare)
	}
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[w]
			st.errs = map[string]int{}
			// Bounded by the pre-signed count and by the deadline.
			for ctx.Err() == nil && time.Now().Before(deadline) && !closed(cfg.Stop) {
				n := int(next.Add(1) - 1)
				if n >= len(atts) {
					return
				}
				send(ctx, client, endpoints[n%len(endpoints)], atts[n], st, cfg.OnOK, start, cfg.KeepTimings)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopBare)
	var cpuAfter cpuTicks
	if cfg.PID > 0 {
		if cpuAfter, err = readCPU(cfg.PID); err != nil {
			return nil, fmt.Errorf("issuer CPU: %w", err)
		}
	}

	if sampler != nil {
		mem, err := sampler.stop()
		if err != nil {
			return nil, fmt.Errorf("issuer memory: %w", err)
		}
		res.RSS = mem
	}

	var lat []time.Duration
	for _, st := range stats {
		lat = append(lat, st.lat...)
		res.Timings = append(res.Timings, st.timings...)
		res.OK += st.ok
		res.TokensPerBatch += float64(st.tokens)
		for k, v := range st.errs {
			res.Errors[k] += v
			res.ErrorCount += v
		}
		for _, d := range st.detail {
			if len(res.transportDetails) < 5 {
				res.transportDetails = append(res.transportDetails, d)
			}
		}
	}
	res.Requests = res.OK + res.ErrorCount
	res.Exhausted = int(next.Load()) >= len(atts)
	res.ElapsedSeconds = elapsed.Seconds()
	res.RedemptionsPerS = float64(res.OK) / elapsed.Seconds()
	res.TokensPerS = res.TokensPerBatch / elapsed.Seconds()
	if res.OK > 0 {
		res.TokensPerBatch /= float64(res.OK)
	}
	res.LatencyMs = latency(lat)
	if cfg.PID > 0 {
		res.CPU = &CPU{IssuerSeconds: cpuAfter.sub(cpuBefore).Seconds(),
			IssuerUserSeconds: cpuAfter.userSince(cpuBefore).Seconds(), IssuerSystemSeconds: cpuAfter.systemSince(cpuBefore).Seconds()}
		if res.OK > 0 {
			res.CPU.IssuerPerRedemptionUs = res.CPU.IssuerSeconds / float64(res.OK) * 1e6
		}
	}
	if cfg.Bare {
		during := <-bareLoad
		if during.err != nil {
			return nil, during.err
		}
		after, err := measureBare(cfg.Key, atts[0])
		if err != nil {
			return nil, err
		}
		if res.CPU == nil {
			res.CPU = &CPU{}
		}
		res.CPU.setBare(*bareBefore, during.c, *after, res.TokensPerBatch)
	}
	return res, nil
}

func closed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var tokenField = []byte(`"token":`)

// body is the request for one attestation. A compact JWS is base64url and
// dots: nothing in it needs JSON escaping.
func body(att string) string { return `{"attestations":["` + att + `"]}` }

func send(ctx context.Context, client *http.Client, endpoint, att string, st *workerStats, onOK func(string), runStart time.Time, keep bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body(att)))
	if err != nil {
		st.errs["request"]++
		return
	}
	req.Header.Set("Content-Type", "application/json")
	t := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		st.errs["transport"]++
		if len(st.detail) < 5 {
			st.detail = append(st.detail, transportError(err))
		}
		return
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		st.errs["transport"]++
		if len(st.detail) < 5 {
			st.detail = append(st.detail, transportError(err))
		}
		return
	}
	took := time.Since(t)
	st.lat = append(st.lat, took)
	if keep {
		st.timings = append(st.timings, Timing{Start: t.Sub(runStart), Latency: took})
	}
	if resp.StatusCode == http.StatusOK {
		st.ok++
		st.tokens += bytes.Count(raw, tokenField)
		if onOK != nil {
			onOK(att)
		}
		return
	}
	st.errs[statusKey(resp.StatusCode, raw)]++
}

// statusKey names an error answer by status and the API's error code.
func statusKey(status int, raw []byte) string {
	var e httpapi.ErrorResponse
	if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" && len(e.Error.Code) <= 64 {
		return strconv.Itoa(status) + " " + e.Error.Code
	}
	return strconv.Itoa(status)
}

// transportError keeps the kind of failure without the request (whose URL
// is harmless, but the habit is not to echo inputs).
func transportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// latency returns p50, p99 and max in milliseconds.
func latency(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	return Latency{P50: ms(percentile(d, 50)), P99: ms(percentile(d, 99)), Max: ms(d[len(d)-1])}
}

// percentile is the nearest-rank percentile of sorted d.
func percentile(d []time.Duration, p int) time.Duration {
	rank := (p*len(d) + 99) / 100 // ceil(p/100 * n)
	if rank < 1 {
		rank = 1
	}
	return d[rank-1]
}
