package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/web"
)

// Files in the data directory besides the database.
const (
	adminTokenFile   = "admin.token"
	demoAttesterFile = "demo-attester.key"
	demoAttesterID   = "demo-lab"
	fingerprintFile  = "bundle-key.fingerprint"
)

type serveConfig struct {
	data, addr, policyFile string
	kek                    string // KEK file; "" is DATA.kek
	demo                   bool
	tlsCert, tlsKey        string
	logLevel               string
	redeemPerMinute        int
	adminPerMinute         int
	adminFailuresPerMinute int
	inventoryPerMinute     int
	// metricsAddr is the operator's /metrics listener ("" or "off": none);
	// a non-loopback address needs metricsRemote.
	metricsAddr   string
	metricsRemote bool
	// inventoryRounding rounds the public inventory's resident counts (0:
	// the default, 10).
	inventoryRounding int
	inventoryRefresh  time.Duration
	// replica, when on, runs a replica on etcd and Redis (serve_replica.go).
	replica replicaConfig
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c serveConfig
	fs := newFlags("serve", "issuer serve [--data DIR] [--kek FILE] [--addr HOST:PORT] [--policy FILE] [--demo] [flags]\n"+
		"       issuer serve --etcd ENDPOINTS --redis ADDRS --kek FILE [--data DIR] [--replica-id ID] [flags]   (one replica of many)", stdout)
	fs.StringVar(&c.data, "data", "./data", "data directory `DIR` (bbolt file, epoch keys, admin token; a replica keeps only the admin token, demo key and fingerprint there)")
	fs.StringVar(&c.kek, "kek", "", "key-encryption key `FILE`, kept outside the data directory; created (0600) when absent (default $"+kekEnv+", else DIR.kek beside the data directory); a replica needs it given, the same file on every replica, and never creates it")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on, `HOST:PORT`")
	fs.StringVar(&c.policyFile, "policy", "", "policy `FILE` to install at start (default: keep the stored one, or the built-in default)")
	fs.BoolVar(&c.demo, "demo", false, "create and register a local demo attester (DIR/demo-attester.key)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate `FILE` (PEM); with --tls-key serves HTTPS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "TLS private key `FILE` (PEM)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	fs.IntVar(&c.redeemPerMinute, "redeem-rate", httpapi.DefaultOptions().RedeemPerMinute, "redemptions per client per minute, `N` (0: no limit)")
	fs.IntVar(&c.adminPerMinute, "admin-rate", httpapi.DefaultOptions().AdminPerMinute, "admin calls per admin token per minute, `N` (0: no limit)")
	fs.IntVar(&c.adminFailuresPerMinute, "admin-failure-rate", httpapi.DefaultOptions().AdminFailuresPerMinute, "failed admin authentications per client per minute, `N` (0: no limit); never blocks a valid token")
	fs.IntVar(&c.inventoryPerMinute, "inventory-rate", httpapi.DefaultOptions().InventoryPerMinute, "public inventory requests per client per minute, `N` (0: no limit)")
	fs.IntVar(&c.inventoryRounding, "inventory-rounding", issuer.DefaultInventoryRounding, "round the public inventory's replay-record and count figures to a multiple of `N` (1: exact; it is public)")
	fs.DurationVar(&c.inventoryRefresh, "inventory-refresh", issuer.DefaultInventoryRefresh, "how often at most the public inventory reads the store, a `DURATION` (it is public: keep it coarse)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "127.0.0.1:9090", "operator's listener for /metrics (Prometheus), `HOST:PORT`, loopback only unless --metrics-allow-remote; \"off\" for none")
	fs.BoolVar(&c.metricsRemote, "metrics-allow-remote", false, "allow --metrics-addr on a non-loopback address (put it behind a firewall: metrics are for operators)")
	addReplicaFlags(fs, &c.replica)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkReplicaFlags(fs, &c.replica); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("serve takes no arguments, got %q", fs.Arg(0))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if c.kek == "" {
		c.kek = os.Getenv(kekEnv)
	}
	if c.redeemPerMinute < 0 || c.adminPerMinute < 0 || c.adminFailuresPerMinute < 0 || c.inventoryPerMinute < 0 {
		return usagef("rate limits must not be negative")
	}
	if c.inventoryRefresh <= 0 {
		return usagef("--inventory-refresh must be positive, got %s", c.inventoryRefresh)
	}
	if c.inventoryRounding < 1 {
		return usagef("--inventory-rounding must be at least 1, got %d", c.inventoryRounding)
	}
	if err := checkMetricsAddr(c.metricsAddr, c.metricsRemote); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return usagef("--log-level: want debug, info, warn or error")
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	return serve(ctx, c, log, stdout)
}

func serve(ctx context.Context, c serveConfig, log *slog.Logger, stdout io.Writer) error {
	var pol *policy.Policy
	if c.policyFile != "" {
		b, err := os.ReadFile(c.policyFile)
		if err != nil {
			return err
		}
		if pol, err = policy.Parse(b); err != nil {
			return fmt.Errorf("%s: %w", c.policyFile, err)
		}
	}
	var tlsCfg *tls.Config
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS key pair: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if c.replica.on() {
		return serveReplica(ctx, c, pol, tlsCfg, log, stdout)
	}

	kekFile, err := resolveKEK(c.kek, c.data)
	if err != nil {
		return err
	}
	db, kekCreated, err := openStore(c.data, kekFile, true, boltstore.Options{Logger: log})
	if err != nil {
		return err
	}
	if kekCreated {
		log.Info("key-encryption key created; back it up apart from the data directory", "kek_file", kekFile)
	}
	// Shutdown order (SPIRE's): HTTP stops first, then background work,
	// then the database closes.
	defer db.Close()

	iss, err := issuer.New(ctx, issuer.Config{Store: db, State: db, Clock: issuer.SystemClock{}, Logger: log, Policy: pol, InventoryRounding: c.inventoryRounding, InventoryRefresh: c.inventoryRefresh})
	if err != nil {
		// report adds the program's name; a policy file that would roll
		// the stored policy back is named.
		msg := strings.TrimPrefix(err.Error(), "issuer: ")
		if c.policyFile != "" && strings.HasPrefix(msg, "the policy given at start") {
			msg = "--policy " + c.policyFile + ": " + msg
		}
		return errors.New(msg)
	}
	return serveOn(ctx, c, served{iss: iss, tls: tlsCfg, kekFile: kekFile, kekCreated: kekCreated,
		background: func(ctx context.Context, _ string) error { return iss.Run(ctx) }}, log, stdout)
}

// served is what serveOn serves: an issuer on its stores, and the work
// that runs beside the HTTP API.
type served struct {
	iss        *issuer.Issuer
	tls        *tls.Config
	kekFile    string
	kekCreated bool
	// parts, if set, says on /healthz whether the stores answer.
	parts func(context.Context) []httpapi.Part
	// background runs until its ctx ends (iss.Run, or a replica's watch
	// and election); id is the replica id (--replica-id, else
	// HOSTNAME:PORT of the address served).
	background func(ctx context.Context, id string) error
	// welcome, if set, adds lines to the welcome text.
	welcome func(w io.Writer, id string)
}

// serveOn writes the local files, serves the HTTP API and runs the
// background work until ctx ends; then HTTP stops first, the background
// work after it.
func serveOn(ctx context.Context, c serveConfig, s served, log *slog.Logger, stdout io.Writer) error {
	iss, tlsCfg, kekFile, kekCreated := s.iss, s.tls, s.kekFile, s.kekCreated
	// Public, but written so 'issuer fingerprint' works while we hold the
	// database lock.
	if err := atomicfile.Write(filepath.Join(c.data, fingerprintFile), []byte(iss.Fingerprint()+"\n"), 0o600); err != nil {
		return err
	}
	tokenPath, tokenCreated, err := ensureAdminToken(ctx, iss, c.data)
	if err != nil {
		return err
	}
	var demoKey string
	if c.demo {
		if demoKey, err = ensureDemoAttester(ctx, iss, c.data); err != nil {
			return err
		}
	}

	opts := httpapi.DefaultOptions()
	opts.Logger = log
	opts.RedeemPerMinute, opts.AdminPerMinute = c.redeemPerMinute, c.adminPerMinute
	opts.AdminFailuresPerMinute, opts.InventoryPerMinute = c.adminFailuresPerMinute, c.inventoryPerMinute
	opts.Verify, opts.Wallet = web.Verify(), web.Wallet()
	opts.Parts = s.parts
	if err := web.VerifyBuilt(); err != nil {
		log.Warn("verifier web app not built; run 'make wasm'", "err", err)
	}
	srv := httpapi.New(iss, opts)

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
		scheme = "https"
	}
	var mln net.Listener
	if c.metricsAddr != "" && c.metricsAddr != "off" {
		if mln, err = net.Listen("tcp", c.metricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("--metrics-addr: %w", err)
		}
	}
	base := scheme + "://" + ln.Addr().String()
	id := replicaID(c.replica.id, ln.Addr())
	printWelcome(stdout, base, iss.Fingerprint(), tokenPath, tokenCreated, demoKey, kekFile, kekCreated)
	if s.welcome != nil {
		s.welcome(stdout, id)
	}
	if mln != nil {
		fmt.Fprintf(stdout, "  metrics (operators only): http://%s/metrics\n", mln.Addr())
	}
	log.Info("issuer listening", "addr", ln.Addr().String(), "policy_version", iss.Policy().Version)

	var msrv *http.Server
	metricsDone := make(chan error, 1)
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			// net/http logs client addresses in its errors (invariant 7).
			ErrorLog: stdlog.New(io.Discard, "", 0)}
		go func() { metricsDone <- msrv.Serve(mln) }()
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.background(runCtx, id) }()

	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.App().Listener(ln) }()

	select {
	case err = <-srvDone:
	case err = <-metricsDone:
		err = fmt.Errorf("metrics listener: %w", err)
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	if msrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = msrv.Shutdown(sctx)
		cancel()
	}
	stopRun()
	if rerr := <-runDone; err == nil {
		err = rerr
	}
	return err
}

func printWelcome(w io.Writer, base, fp, tokenPath string, tokenCreated bool, demoKey, kekFile string, kekCreated bool) {
	fmt.Fprintf(w, "Healthcode issuer on %s\n", base)
	fmt.Fprintf(w, "  bundle key fingerprint (verifiers pin this): %s\n", fp)
	if kekCreated {
		fmt.Fprintf(w, "  key-encryption key created in %s: back it up apart from the data directory; without it the keys cannot be opened\n", kekFile)
	}
	switch {
	case tokenCreated:
		fmt.Fprintf(w, "  admin token created and written to %s (shown nowhere else)\n", tokenPath)
	case tokenPath != "":
		fmt.Fprintf(w, "  admin token: reusing the one in %s (made at an earlier start)\n", tokenPath)
	default:
		fmt.Fprintf(w, "  admin token: none on disk; the tokens made before still work ('issuer admin tokens list')\n")
	}
	fmt.Fprintf(w, "  wallet: %s/wallet/   verifier: %s/verify/   inventory: %s/v1/inventory\n", base, base, base)
	if demoKey != "" {
		// Absolute paths, so the files it makes go to a temporary
		// directory, not the checkout.
		bin := "bin"
		if exe, err := os.Executable(); err == nil {
			bin = filepath.Dir(exe)
		}
		if abs, err := filepath.Abs(demoKey); err == nil {
			demoKey = abs
		}
		fmt.Fprintf(w, "\nTry it (in another shell):\n")
		fmt.Fprintf(w, "  cd \"$(mktemp -d)\"\n")
		fmt.Fprintf(w, "  %s/attester sign --key %s --id %s --kind test-negative > att.jws\n", bin, demoKey, demoAttesterID)
		fmt.Fprintf(w, "  curl -s %s/v1/tokens -H 'Content-Type: application/json' -d \"{\\\"attestations\\\":[\\\"$(cat att.jws)\\\"]}\" > batch.json\n", base)
		fmt.Fprintf(w, "  %s/verifier sync %s --pin %s --bundle bundle.json\n", bin, base, fp)
		fmt.Fprintf(w, "  %s/verifier check --bundle bundle.json \"$(grep -o '\"token\":\"[^\"]*\"' batch.json | head -1 | cut -d'\"' -f4)\"\n", bin)
	}
}

// ensureAdminToken creates the first admin token when none exists and
// writes it to DIR/admin.token (0600). Only its hash is stored. It returns
// the file's path if there is one, and whether the token was made now.
func ensureAdminToken(ctx context.Context, iss *issuer.Issuer, dir string) (string, bool, error) {
	path := filepath.Join(dir, adminTokenFile)
	if iss.HasAdminTokens() {
		if _, err := os.Stat(path); err == nil {
			return path, false, nil
		}
		return "", false, nil
	}
	tok, err := iss.CreateAdminToken(ctx, "startup", "initial")
	var ie *issuer.InputError
	if errors.As(err, &ie) && ie.Kind == issuer.KindConflict {
		return "", false, nil // another replica made it a moment ago, in its own data directory
	}
	if err != nil {
		return "", false, err
	}
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return path, true, nil
}

// ensureDemoAttester makes DIR/demo-attester.key on first use and
// registers it as "demo-lab".
func ensureDemoAttester(ctx context.Context, iss *issuer.Issuer, dir string) (string, error) {
	path := filepath.Join(dir, demoAttesterFile)
	key, err := keyfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := keyfile.Write(path, newKey(), false); err != nil {
			return "", err
		}
		key, err = keyfile.Read(path)
	}
	if err != nil {
		return "", fmt.Errorf("demo attester key: %w", err)
	}
	pub := keyfile.EncodePublic(publicOf(key))
	list, err := iss.Attesters(ctx)
	if err != nil {
		return "", err
	}
	for _, a := range list {
		if a.ID == demoAttesterID && keyfile.EncodePublic(a.Public) == pub {
			return path, nil
		}
	}
	if err := iss.AddAttester(ctx, "startup", demoAttesterID, publicOf(key)); err != nil {
		return "", err
	}
	return path, nil
}

func newKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return k
}

func publicOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// kekEnv names the KEK file when --kek is not given.
const kekEnv = "HEALTHCODE_KEK_FILE"

// resolveKEK returns the KEK file: the one given, else DATA.kek beside the
// data directory. It refuses a file inside the data directory: a copy of
// that directory must not carry what opens its keys.
func resolveKEK(given, data string) (string, error) {
	path := given
	if path == "" {
		path = filepath.Clean(data) + ".kek"
	}
	absData, err := filepath.Abs(data)
	if err != nil {
		return "", err
	}
	absKEK, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if rel, err := filepath.Rel(absData, absKEK); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", usagef("--kek %s is inside the data directory %s; keep the key-encryption key apart from the keys it seals", path, data)
	}
	return path, nil
}

// openStore opens the data directory with the KEK in kekFile. With create,
// a missing KEK file is made (0600) first, for a new data directory or one
// written before sealing; if the store turns out to be sealed under
// another KEK, the new file is removed again and the error says which file
// is missing.
func openStore(data, kekFile string, create bool, opts boltstore.Options) (db *boltstore.DB, created bool, err error) {
	var k *kek.Key
	if create {
		if err := os.MkdirAll(filepath.Dir(kekFile), 0o700); err != nil {
			return nil, false, err
		}
		k, created, err = kek.LoadOrCreate(kekFile)
	} else {
		k, err = kek.Load(kekFile)
	}
	if err != nil {
		return nil, false, fmt.Errorf("key-encryption key: %w", err)
	}
	opts.KEK = k
	db, err = boltstore.Open(data, opts)
	switch {
	case err == nil:
		return db, created, nil
	case errors.Is(err, kek.ErrWrongKEK) && created:
		os.Remove(kekFile)
		return nil, false, fmt.Errorf("the keys in %s are sealed under a key-encryption key, and the KEK file %s does not exist: give the file they were sealed under with --kek FILE (or $%s)", data, kekFile, kekEnv)
	case errors.Is(err, kek.ErrWrongKEK):
		return nil, false, fmt.Errorf("%s is not the key-encryption key the keys in %s are sealed under: %w", kekFile, data, err)
	case created && strings.Contains(err.Error(), "another issuer holds it"):
		// Refused before it read anything: the new KEK sealed nothing, and
		// left behind it would be taken for the real one at the next start.
		os.Remove(kekFile)
	}
	return nil, false, err
}

// checkMetricsAddr refuses a metrics listener off the loopback interface
// unless the operator asked for one: the counters are for operators, and
// exact counts at a quiet hour tell an onlooker that someone was just
// issued a colour.
func checkMetricsAddr(addr string, remote bool) error {
	if addr == "" || addr == "off" || remote {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--metrics-addr: want HOST:PORT, got %q", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("--metrics-addr %s is not a loopback address; metrics are for operators (add --metrics-allow-remote to serve them there anyway)", addr)
}
