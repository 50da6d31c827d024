// Package issuertest starts a real issuer for tests: a bbolt file in a
// temp dir, the core, and the fiber HTTP API listening on 127.0.0.1, with a
// registered test attester and a settable clock.
package issuertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/web"
)

// Clock is a settable clock, safe for concurrent use. It is an
// issuer.Waker: Run's waits end when Set or Advance reaches them.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan struct{}
}

// WakeAt returns a channel that receives once the clock reaches t.
func (c *Clock) WakeAt(t time.Time) (<-chan struct{}, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{}, 1)
	if !c.now.Before(t) {
		ch <- struct{}{}
		return ch, func() {}
	}
	c.waiters = append(c.waiters, waiter{t, ch})
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for n, w := range c.waiters {
			if w.ch == ch {
				c.waiters = append(c.waiters[:n], c.waiters[n+1:]...)
				return
			}
		}
	}
}

// wake fires the waits the clock has reached. Callers hold c.mu.
func (c *Clock) wake() {
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !c.now.Before(w.at) {
			w.ch <- struct{}{}
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.wake()
	c.mu.Unlock()
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.wake()
	c.mu.Unlock()
}

var _ issuer.Waker = (*Clock)(nil)

// Env is a running issuer.
type Env struct {
	URL         string
	MetricsURL  string // the operator's /metrics listener, apart from URL
	Dir         string
	Issuer      *issuer.Issuer
	Server      *httpapi.Server
	DB          *boltstore.DB
	Clock       *Clock
	Pin         string
	AttesterID  string
	AttesterKey ed25519.PrivateKey
	AdminToken  string
	AdminName   string // the admin token's name, as the audit log shows it
	KEK         *kek.Key
}

type config struct {
	pol   *policy.Policy
	start time.Time
	opts  httpapi.Options
	dir   string
	log   *slog.Logger
	kek   *kek.Key
}

// Option changes Start.
type Option func(*config)

// WithPolicy installs p at start.
func WithPolicy(p *policy.Policy) Option { return func(c *config) { c.pol = p } }

// WithTime starts the clock at t (default: the real time now, so that a
// browser's clock agrees).
func WithTime(t time.Time) Option { return func(c *config) { c.start = t } }

// WithHTTPOptions replaces the HTTP options (rate limits off by default).
func WithHTTPOptions(o httpapi.Options) Option { return func(c *config) { c.opts = o } }

// WithLogger sends the issuer's, the store's and the HTTP server's logs to
// log (default: discarded), e.g. to check what reaches a log line.
func WithLogger(log *slog.Logger) Option { return func(c *config) { c.log = log } }

// WithDir uses dir as the data directory (to restart on the same data).
func WithDir(dir string) Option { return func(c *config) { c.dir = dir } }

// WithKEK seals the store's keys under k (default: the KEK in the file
// beside the data directory, DIR.kek, as issuer serve does; so a restart
// WithDir opens what the first start sealed).
func WithKEK(k *kek.Key) Option { return func(c *config) { c.kek = k } }

// KEKBeside loads the KEK file beside the data directory dir (dir + ".kek"),
// creating it on first use.
func KEKBeside(t testing.TB, dir string) *kek.Key {
	t.Helper()
	k, _, err := kek.LoadOrCreate(filepath.Clean(dir) + ".kek")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Start runs an issuer until the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	c := config{start: time.Now(), opts: httpapi.DefaultOptions()}
	c.opts.RedeemPerMinute, c.opts.AdminPerMinute = 0, 0
	c.opts.Verify, c.opts.Wallet = web.Verify(), web.Wallet()
	for _, o := range opts {
		o(&c)
	}
	if c.dir == "" {
		c.dir = t.TempDir()
	}
	clock := NewClock(c.start)
	ctx := context.Background()
	if c.log != nil {
		c.opts.Logger = c.log
	}
	if c.kek == nil {
		c.kek = KEKBeside(t, c.dir)
	}
	db, err := boltstore.Open(c.dir, boltstore.Options{Clock: clock, Logger: c.log, KEK: c.kek})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(ctx, issuer.Config{Store: db, State: db, Clock: clock, Policy: c.pol, Logger: c.log})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.AddAttester(ctx, "test", "test-lab", pub); err != nil {
		t.Fatal(err)
	}
	adminName := "test-admin-" + randID()
	admin, err := iss.CreateAdminToken(ctx, "test", adminName)
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.New(iss, c.opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.App().Listener(ln)
	}()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	msrv := &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	mdone := make(chan struct{})
	go func() {
		defer close(mdone)
		_ = msrv.Serve(mln)
	}()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = msrv.Shutdown(sctx)
		<-done
		<-mdone
		db.Close()
	})
	return &Env{
		URL: "http://" + ln.Addr().String(), MetricsURL: "http://" + mln.Addr().String() + "/metrics", Dir: c.dir, Issuer: iss, Server: srv, DB: db, Clock: clock,
		Pin: iss.Fingerprint(), AttesterID: "test-lab", AttesterKey: priv, AdminToken: admin, AdminName: adminName,
		KEK: c.kek,
	}
}

func randID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Attest signs an attestation of kind about an event at at (zero: now),
// expiring 24 hours from now, with a fresh id.
func (e *Env) Attest(t testing.TB, kind attestation.Kind, at time.Time, hint string) string {
	t.Helper()
	now := e.Clock.Now()
	if at.IsZero() {
		at = now
	}
	s, err := attestation.Sign(e.AttesterKey, attestation.Claims{
		Attester: e.AttesterID, Kind: kind, At: at.Unix(), Expires: now.Add(24 * time.Hour).Unix(), ID: randID(), Hint: hint,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Post sends body to path and returns the status and answer.
func (e *Env) Post(t testing.TB, path string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// Redeem posts attestations to /v1/tokens and fails the test unless it
// gets 200. It returns the colour and the tokens in order.
func (e *Env) Redeem(t testing.TB, atts ...string) (string, []string) {
	t.Helper()
	status, raw := e.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: atts})
	if status != http.StatusOK {
		t.Fatalf("POST /v1/tokens: %d %s", status, raw)
	}
	var resp httpapi.TokensResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	toks := make([]string, len(resp.Tokens))
	for n, tk := range resp.Tokens {
		toks[n] = tk.Token
	}
	return resp.Colour, toks
}

// BundleRaw fetches the signed bundle over HTTP.
func (e *Env) BundleRaw(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(e.URL + "/.well-known/healthcode/bundle")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// Bundle fetches and opens the bundle under the pin.
func (e *Env) Bundle(t testing.TB) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Open(e.BundleRaw(t), e.Pin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SealedKeyOnDisk finds, in any file under dir, the sealed private key the
// store wrote for signing key kid, as it lies on disk (the base64 of the
// JSON record), or nil. The plain key is never on disk; a forensic test
// uses this to show that even the sealed copy is gone once destroyed.
func SealedKeyOnDisk(t testing.TB, dir, kid string) []byte {
	t.Helper()
	prefix := []byte(`"id":"` + kid + `","sealed":"`)
	var found []byte
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, prefix); i >= 0 {
			rest := b[i+len(prefix):]
			if j := bytes.IndexByte(rest, '"'); j > 0 {
				found = bytes.Clone(rest[:j])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
