package issuer_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/preload"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/verifier"
)

// The budgets these measure (BENCHMARKS.md, `make bench`):
//   - one redemption (check, durable replay record, sign the batch) at most
//     1.3× the bare ed25519.Sign calls of its batch;
//   - QR PNG → verdict, for comparison with verification alone;
//   - token size: QR version 10 at level M without the holder hint, 11 with.

// benchIssuer is the real core on a real bbolt file in a temp dir, with the
// system clock, the default policy (or p) and one registered attester.
type benchIssuer struct {
	iss *issuer.Issuer
	key ed25519.PrivateKey
}

const benchAttester = "bench-lab"

func newBenchIssuer(b *testing.B, p *policy.Policy) *benchIssuer {
	return newPreloadedIssuer(b, b, p, 0)
}

// preloadLive is the live replay records the "live=1M" benchmarks hold
// before the clock starts, as a city's issuer does (issue 10).
const preloadLive = 1_000_000

// newPreloadedIssuer is newBenchIssuer on a store that already holds live
// replay records, written through the store's own API (not timed). Its
// directory and store live as long as owner; failures go to b.
func newPreloadedIssuer(owner, b *testing.B, p *policy.Policy, live int) *benchIssuer {
	b.Helper()
	ctx := context.Background()
	dir := owner.TempDir()
	db, err := boltstore.Open(dir, boltstore.Options{KEK: issuertest.KEKBeside(b, dir)})
	if err != nil {
		b.Fatal(err)
	}
	owner.Cleanup(func() { db.Close() })
	now := time.Now()
	if err := preload.Replay(ctx, db, now, live, 0, "preload-lab", "", preload.Spread(now, 3)); err != nil {
		b.Fatal(err)
	}
	iss, err := issuer.New(ctx, issuer.Config{Store: db, State: db, Policy: p})
	if err != nil {
		b.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	if err := iss.AddAttester(ctx, "bench", benchAttester, pub); err != nil {
		b.Fatal(err)
	}
	return &benchIssuer{iss: iss, key: key}
}

// attestations signs n fresh negative tests sampled an hour ago.
func (e *benchIssuer) attestations(b *testing.B, n int, hint string) []string {
	return e.sign(b, benchAttester, n, hint)
}

func (e *benchIssuer) sign(b *testing.B, attester string, n int, hint string) []string {
	b.Helper()
	now := e.iss.Now()
	out := make([]string, n)
	for i := range out {
		var id [12]byte
		if _, err := rand.Read(id[:]); err != nil {
			b.Fatal(err)
		}
		s, err := attestation.Sign(e.key, attestation.Claims{
			Attester: attester, Kind: attestation.TestNegative, At: now.Add(-time.Hour).Unix(),
			Expires: now.Add(24 * time.Hour).Unix(), ID: base64.RawURLEncoding.EncodeToString(id[:]), Hint: hint,
		})
		if err != nil {
			b.Fatal(err)
		}
		out[i] = s
	}
	return out
}

func (e *benchIssuer) redeem(b *testing.B, att string) *issuer.Batch {
	batch, err := e.iss.Redeem(context.Background(), issuer.Request{Attestations: []string{att}})
	if err != nil {
		b.Fatal(err)
	}
	return batch
}

// signingInput is what a token's signature covers, and a key of the same
// kind, for the bare ed25519.Sign baseline.
func signingInput(b *testing.B, tok string) ([]byte, ed25519.PrivateKey) {
	b.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return []byte(tok[:strings.LastIndexByte(tok, '.')]), key
}

// BenchmarkRedeem is one redemption at a time: each waits for its own
// durable commit (bbolt fsync after the batch delay).
func BenchmarkRedeem(b *testing.B) {
	e := newBenchIssuer(b, nil)
	atts := e.attestations(b, b.N+1, "")
	sigs := len(e.redeem(b, atts[b.N]).Tokens)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.redeem(b, atts[i])
	}
	b.ReportMetric(float64(sigs), "sigs/op")
}

// BenchmarkRedeemParallel runs 64 redemptions at once (32 per core on two
// cores), as an HTTP server under load does, so commits are shared.
func BenchmarkRedeemParallel(b *testing.B) {
	e := newBenchIssuer(b, nil)
	atts := e.attestations(b, b.N+1, "")
	sigs := len(e.redeem(b, atts[b.N]).Tokens)
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.redeem(b, atts[next.Add(1)-1])
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "redemptions/s")
	b.ReportMetric(float64(sigs), "sigs/op")
}

// bareBatch is the signing a redemption cannot avoid: as many ed25519.Sign
// calls over a token's signing input as its batch has tokens.
func bareBatch(b *testing.B) (msg []byte, key ed25519.PrivateKey, sigs int) {
	e := newBenchIssuer(b, nil)
	batch := e.redeem(b, e.attestations(b, 1, "")[0])
	msg, key = signingInput(b, batch.Tokens[0].Token)
	return msg, key, len(batch.Tokens)
}

func BenchmarkBareSignBatch(b *testing.B) {
	msg, key, sigs := bareBatch(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range sigs {
			ed25519.Sign(key, msg)
		}
	}
	b.ReportMetric(float64(sigs), "sigs/op")
}

func BenchmarkBareSignBatchParallel(b *testing.B) {
	msg, key, sigs := bareBatch(b)
	b.SetParallelism(32)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for range sigs {
				ed25519.Sign(key, msg)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "batches/s")
	b.ReportMetric(float64(sigs), "sigs/op")
}

// BenchmarkRedeemRatio alternates one redemption and its batch's bare
// signatures, call by call, and compares the medians, so that other load on
// a shared machine hits both alike (as verifier.BenchmarkVerifyRatio does).
func BenchmarkRedeemRatio(b *testing.B) {
	e := newBenchIssuer(b, nil)
	atts := e.attestations(b, b.N+1, "")
	msg, key := signingInput(b, e.redeem(b, atts[b.N]).Tokens[0].Token)
	full := make([]time.Duration, 0, b.N)
	bare := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t1 := time.Now()
		batch := e.redeem(b, atts[i])
		t2 := time.Now()
		for range batch.Tokens {
			ed25519.Sign(key, msg)
		}
		t3 := time.Now()
		full = append(full, t2.Sub(t1))
		bare = append(bare, t3.Sub(t2))
	}
	mf, mb := median(full), median(bare)
	b.ReportMetric(float64(mf)/float64(mb), "redeem/bare")
	b.ReportMetric(float64(mf-mb)/1e3, "overhead-µs")
}

// BenchmarkRedeemParallelRatio is the paired form of RedeemParallel vs
// BareSignBatchParallel: each round redeems 256 attestations from 64
// goroutines, then makes 256 batches' worth of bare signatures from 64
// goroutines, and the medians of the round times are compared. It runs on
// an empty store and on one holding 1M live replay records.
func BenchmarkRedeemParallelRatio(b *testing.B) {
	for _, pl := range []struct {
		name string
		live int
	}{{"live=0", 0}, {"live=1M", preloadLive}} {
		// Made once, on first use, in the parent's directory: the
		// sub-benchmark runs several times (b.N).
		var e *benchIssuer
		parent := b
		b.Run(pl.name, func(b *testing.B) {
			if e == nil {
				e = newPreloadedIssuer(parent, b, nil, pl.live)
			}
			redeemParallelRatio(b, e)
		})
	}
}

func redeemParallelRatio(b *testing.B, e *benchIssuer) {
	const workers, perRound = 64, 256
	atts := e.attestations(b, b.N*perRound+1, "")
	msg, key := signingInput(b, e.redeem(b, atts[len(atts)-1]).Tokens[0].Token)
	sigs := 0
	full := make([]time.Duration, 0, b.N)
	bare := make([]time.Duration, 0, b.N)
	round := func(do func(n int)) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		t := time.Now()
		for range workers {
			wg.Go(func() {
				for n := next.Add(1) - 1; n < perRound; n = next.Add(1) - 1 {
					do(int(n))
				}
			})
		}
		wg.Wait()
		return time.Since(t)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := i * perRound
		full = append(full, round(func(n int) {
			if batch := e.redeem(b, atts[base+n]); n == 0 {
				sigs = len(batch.Tokens)
			}
		}))
		bare = append(bare, round(func(int) {
			for range sigs {
				ed25519.Sign(key, msg)
			}
		}))
	}
	mf, mb := median(full), median(bare)
	b.ReportMetric(float64(mf)/float64(mb), "redeem/bare")
	b.ReportMetric(perRound/mf.Seconds(), "redemptions/s")
}

// BenchmarkHTTPRatio compares, on one issuer (fiber on 127.0.0.1, real
// bbolt), rounds of 256 redemptions over HTTP from 64 clients with rounds
// of 256 redemptions called in-process from 64 goroutines, alternating, by
// median round time: what the HTTP layer costs, paired so that other load
// on the machine hits both alike.
func BenchmarkHTTPRatio(b *testing.B) {
	const workers, perRound = 64, 256
	env := issuertest.Start(b)
	e := &benchIssuer{iss: env.Issuer, key: env.AttesterKey}
	atts := e.sign(b, env.AttesterID, 2*b.N*perRound, "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	url := env.URL + "/v1/tokens"
	post := func(att string) {
		resp, err := client.Post(url, "application/json", strings.NewReader(`{"attestations":["`+att+`"]}`))
		if err != nil {
			b.Error(err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Errorf("status %d", resp.StatusCode)
		}
	}
	round := func(do func(n int)) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		t := time.Now()
		for range workers {
			wg.Go(func() {
				for n := next.Add(1) - 1; n < perRound; n = next.Add(1) - 1 {
					do(int(n))
				}
			})
		}
		wg.Wait()
		return time.Since(t)
	}
	overHTTP := make([]time.Duration, 0, b.N)
	inProc := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := 2 * i * perRound
		overHTTP = append(overHTTP, round(func(n int) { post(atts[base+n]) }))
		inProc = append(inProc, round(func(n int) { e.redeem(b, atts[base+perRound+n]) }))
	}
	mh, mi := median(overHTTP), median(inProc)
	b.ReportMetric(float64(mi)/float64(mh), "http/inprocess")
	b.ReportMetric(perRound/mh.Seconds(), "http-redemptions/s")
	b.ReportMetric(perRound/mi.Seconds(), "inprocess-redemptions/s")
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

// BenchmarkQRDecodeVerify is the venue's whole offline path from a 512 px
// QR PNG (the size the attester CLI writes) to a verdict.
func BenchmarkQRDecodeVerify(b *testing.B) {
	e := newBenchIssuer(b, nil)
	tok := e.redeem(b, e.attestations(b, 1, "")[0]).Tokens[0]
	png, err := qr.PNG(tok.Token, 512)
	if err != nil {
		b.Fatal(err)
	}
	_, bun := e.iss.Bundle()
	at := tok.NotBefore
	if now := e.iss.Now(); now.After(at) {
		at = now
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := qr.Decode(bytes.NewReader(png))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := verifier.Verify(s, bun, at); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenSize reports the length of an issued token and the QR
// version go-qrcode needs for it at level M, with the holder hint off and
// on (a six-character hint, the longest the wallet shows comfortably).
func BenchmarkTokenSize(b *testing.B) {
	for _, mode := range []struct {
		name string
		hint policy.HintMode
		text string
	}{{"hint=off", policy.HintNone, ""}, {"hint=on", policy.HintOn, "AB1990"}} {
		b.Run(mode.name, func(b *testing.B) {
			p := policy.Default()
			p.HolderHint = mode.hint
			e := newBenchIssuer(b, p)
			batch := e.redeem(b, e.attestations(b, 1, mode.text)[0])
			longest, version := 0, 0
			for _, t := range batch.Tokens {
				v, err := qr.Version(t.Token)
				if err != nil {
					b.Fatal(err)
				}
				longest, version = max(longest, len(t.Token)), max(version, v)
			}
			tok := batch.Tokens[0].Token
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := qr.Version(tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(longest), "token-bytes")
			b.ReportMetric(float64(version), "qr-version")
		})
	}
}
