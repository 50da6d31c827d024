package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/migrate"
)

const migrateSynopsis = "issuer migrate --data DIR --kek FILE --etcd ENDPOINTS [--prefix P] [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE] [--etcd-user NAME --etcd-password-file FILE]"

// migrateHelp follows the flags in 'issuer migrate --help'.
const migrateHelp = `
Copies a bbolt issuer's configuration into a fresh etcd prefix for issuer
replicas (issuer serve --etcd ... --redis ... --kek FILE), offline: stop the
bbolt issuer first (migrate takes its data directory's lock). Copied: the
bundle key (verifiers' pins stay valid), the signing keys and withdrawals,
the bundle sequence (the replicas' bundles continue above it), the policy
in force, the attesters, the admin tokens' hashes (the old admin.token
works on the replicas) and the audit log, each record with its deadline.
Refused if the prefix already holds an issuer's state.

Not copied: replay records and aggregate counts. Replay records are keyed
under the bbolt store's epoch keys and cannot be read back (by design), so
no store can take them over: an attestation redeemed on the bbolt issuer in
the renewal period in progress can be redeemed once more on the replicas
until that period ends. Residents see nothing of it; the wallet's next
renewal just works. Policy history is not copied either.

The keys are sealed in etcd under the same KEK: start every replica with
--kek FILE.
`

type migrateConfig struct {
	data, kekFile             string
	endpoints, prefix         string
	caFile, certFile, keyFile string
	user, passwordFile        string
	timeout                   time.Duration
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c migrateConfig
	fs := newFlags("migrate", migrateSynopsis+"\n"+migrateHelp, stdout)
	fs.StringVar(&c.data, "data", "./data", "the bbolt issuer's data `DIR` (the issuer must not be running on it)")
	fs.StringVar(&c.kekFile, "kek", os.Getenv(kekEnv), "the key-encryption key `FILE` DIR's keys are sealed under; the replicas use it too (default $"+kekEnv+", else DIR.kek)")
	fs.StringVar(&c.endpoints, "etcd", "", "the cluster's etcd `ENDPOINTS`, comma-separated (http://HOST:PORT or https://HOST:PORT)")
	fs.StringVar(&c.prefix, "prefix", "/healthcode/", "the key `PREFIX` the replicas use in etcd (their --prefix)")
	fs.StringVar(&c.caFile, "etcd-ca", "", "CA certificate `FILE` (PEM) to verify etcd's server certificates")
	fs.StringVar(&c.certFile, "etcd-cert", "", "client certificate `FILE` (PEM) for etcd, with --etcd-key")
	fs.StringVar(&c.keyFile, "etcd-key", "", "client private key `FILE` (PEM) for etcd")
	fs.StringVar(&c.user, "etcd-user", "", "etcd user `NAME` (etcd auth), with --etcd-password-file")
	fs.StringVar(&c.passwordFile, "etcd-password-file", "", "`FILE` holding the etcd user's password")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up after `DURATION`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("migrate takes no arguments, got %q", fs.Arg(0))
	}
	if c.endpoints == "" {
		return usagef("migrate needs --etcd ENDPOINTS (the cluster's etcd)")
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return usagef("--etcd-cert and --etcd-key go together")
	}
	if (c.user == "") != (c.passwordFile == "") {
		return usagef("--etcd-user and --etcd-password-file go together")
	}
	if c.timeout <= 0 {
		return usagef("--timeout must be positive, got %s", c.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return runMigrate(ctx, c, stdout)
}

func runMigrate(ctx context.Context, c migrateConfig, stdout io.Writer) error {
	if _, err := os.Stat(filepath.Join(c.data, "healthcode.db")); err != nil {
		return fmt.Errorf("no issuer state in %s: nothing to migrate", c.data)
	}
	kekFile, err := resolveKEK(c.kekFile, c.data)
	if err != nil {
		return err
	}
	src, _, err := openStore(c.data, kekFile, false, boltstore.Options{})
	if err != nil {
		return err
	}
	defer src.Close()
	k, err := kek.Load(kekFile)
	if err != nil {
		return fmt.Errorf("key-encryption key: %w", err)
	}

	cfg, err := etcdClientConfig(c)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", c.endpoints, err)
	}
	defer cli.Close()
	dst, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: c.prefix, KEK: k})
	if err != nil {
		return fmt.Errorf("etcd %s prefix %s: %w", c.endpoints, c.prefix, err)
	}
	defer dst.Close()

	sum, err := migrate.FromBolt(ctx, src, dst, issuer.SystemClock{}.Now())
	if err != nil {
		if sum.Written {
			return fmt.Errorf("%w\nthe prefix %s now holds part of the configuration: do not start replicas on it; delete it (etcdctl del --prefix %s) and run migrate again", err, c.prefix, c.prefix)
		}
		return err
	}
	fmt.Fprintf(stdout, "migrated %s to etcd %s (prefix %s):\n", c.data, c.endpoints, c.prefix)
	fmt.Fprintf(stdout, "  bundle key: fingerprint %s, the one verifiers pinned\n", sum.Fingerprint)
	fmt.Fprintf(stdout, "  %d signing keys, %d withdrawals; bundle sequence continues above %d\n", sum.Keys, sum.Withdrawals, sum.Sequence)
	fmt.Fprintf(stdout, "  policy version %d, %d attesters, %d admin tokens, %d audit entries\n", sum.Policy, sum.Attesters, sum.AdminTokens, sum.Audit)
	if sum.Expired > 0 {
		fmt.Fprintf(stdout, "  %d records past their deadline were left out (the next sweep would delete them)\n", sum.Expired)
	}
	fmt.Fprintf(stdout, "not moved: replay records and aggregate counts (an attestation redeemed here in the renewal period in progress can redeem once more until it ends; see 'issuer migrate --help')\n")
	fmt.Fprintf(stdout, "next: start the replicas with --etcd %s --kek %s; do not start the bbolt issuer on %s again\n", c.endpoints, kekFile, c.data)
	return nil
}

// etcdClientConfig is the etcd client of the flags: TLS when a CA or a
// client certificate is given, a user when etcd auth is on.
func etcdClientConfig(c migrateConfig) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   strings.Split(c.endpoints, ","),
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	}
	if c.caFile != "" || c.certFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caFile != "" {
			pem, err := os.ReadFile(c.caFile)
			if err != nil {
				return cfg, fmt.Errorf("--etcd-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return cfg, fmt.Errorf("--etcd-ca %s: no PEM certificate in it", c.caFile)
			}
			tc.RootCAs = pool
		}
		if c.certFile != "" {
			cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
			if err != nil {
				return cfg, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	if c.user != "" {
		pw, err := os.ReadFile(c.passwordFile)
		if err != nil {
			return cfg, fmt.Errorf("--etcd-password-file: %w", err)
		}
		cfg.Username, cfg.Password = c.user, strings.TrimRight(string(pw), "\r\n")
	}
	return cfg, nil
}
