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
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

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
	demo                   bool
	tlsCert, tlsKey        string
	logLevel               string
	redeemPerMinute        int
	adminPerMinute         int
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c serveConfig
	fs := newFlags("serve", "issuer serve [--data DIR] [--addr HOST:PORT] [--policy FILE] [--demo]", stderr)
	fs.StringVar(&c.data, "data", "./data", "data directory (bbolt file, epoch keys, admin token)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.policyFile, "policy", "", "policy file to install at start (default: keep the stored one, or the built-in default)")
	fs.BoolVar(&c.demo, "demo", false, "create and register a local demo attester (DIR/demo-attester.key)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate file (PEM); with --tls-key serves HTTPS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&c.redeemPerMinute, "redeem-rate", httpapi.DefaultOptions().RedeemPerMinute, "redemptions per client per minute (0: no limit)")
	fs.IntVar(&c.adminPerMinute, "admin-rate", httpapi.DefaultOptions().AdminPerMinute, "admin calls per client per minute (0: no limit)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("serve takes no arguments, got %q", fs.Arg(0))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if c.redeemPerMinute < 0 || c.adminPerMinute < 0 {
		return usagef("rate limits must not be negative")
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

	db, err := boltstore.Open(c.data, boltstore.Options{Logger: log})
	if err != nil {
		return err
	}
	// Shutdown order (SPIRE's): HTTP stops first, then background work,
	// then the database closes.
	defer db.Close()

	iss, err := issuer.New(ctx, issuer.Config{Store: db, State: db, Clock: issuer.SystemClock{}, Logger: log, Policy: pol})
	if err != nil {
		// A policy file with a version not above the stored one is an
		// operator mistake worth a clear word.
		return err
	}
	// Public, but written so 'issuer fingerprint' works while we hold the
	// database lock.
	if err := writeSecret(filepath.Join(c.data, fingerprintFile), []byte(iss.Fingerprint()+"\n")); err != nil {
		return err
	}
	tokenPath, err := ensureAdminToken(ctx, iss, c.data)
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
	opts.Verify, opts.Wallet = web.Verify(), web.Wallet()
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
	base := scheme + "://" + ln.Addr().String()
	printWelcome(stdout, base, iss.Fingerprint(), tokenPath, demoKey)
	log.Info("issuer listening", "addr", ln.Addr().String(), "policy_version", iss.Policy().Version)

	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- iss.Run(runCtx) }()

	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.App().Listener(ln) }()

	select {
	case err = <-srvDone:
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	stopRun()
	if rerr := <-runDone; err == nil {
		err = rerr
	}
	return err
}

func printWelcome(w io.Writer, base, fp, tokenPath, demoKey string) {
	fmt.Fprintf(w, "Healthcode issuer on %s\n", base)
	fmt.Fprintf(w, "  bundle key fingerprint (verifiers pin this): %s\n", fp)
	if tokenPath != "" {
		fmt.Fprintf(w, "  admin token written to %s (shown nowhere else)\n", tokenPath)
	}
	fmt.Fprintf(w, "  wallet: %s/wallet/   verifier: %s/verify/   inventory: %s/v1/inventory\n", base, base, base)
	if demoKey != "" {
		fmt.Fprintf(w, "\nTry it (in another shell):\n")
		fmt.Fprintf(w, "  bin/attester sign --key %s --id %s --kind test-negative > att.jws\n", demoKey, demoAttesterID)
		fmt.Fprintf(w, "  curl -s %s/v1/tokens -H 'Content-Type: application/json' -d \"{\\\"attestations\\\":[\\\"$(cat att.jws)\\\"]}\" > batch.json\n", base)
		fmt.Fprintf(w, "  bin/verifier sync %s --pin %s --bundle bundle.json\n", base, fp)
		fmt.Fprintf(w, "  bin/verifier check --bundle bundle.json \"$(grep -o '\"token\":\"[^\"]*\"' batch.json | head -1 | cut -d'\"' -f4)\"\n")
	}
}

// ensureAdminToken creates the first admin token when none exists and
// writes it to DIR/admin.token (0600). Only its hash is stored.
func ensureAdminToken(ctx context.Context, iss *issuer.Issuer, dir string) (string, error) {
	path := filepath.Join(dir, adminTokenFile)
	if iss.HasAdminTokens() {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		return "", nil
	}
	tok, err := iss.CreateAdminToken(ctx, "startup", "initial")
	if err != nil {
		return "", err
	}
	if err := writeSecret(path, []byte(tok+"\n")); err != nil {
		return "", err
	}
	return path, nil
}

// writeSecret replaces path with data, mode 0600, durably.
func writeSecret(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
