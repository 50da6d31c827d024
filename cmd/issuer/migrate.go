package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/migrate"
)

const migrateSynopsis = "issuer migrate --data DIR --kek FILE --etcd ENDPOINTS [--prefix P] [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE] [--etcd-user NAME --etcd-password-file FILE]"

// migrateHelp follows the synopsis in 'issuer migrate --help'.
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
	data, kekFile string
	etcd          replicaConfig // the etcd part: endpoints, prefix, TLS, auth, timeouts
	timeout       time.Duration
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := migrateConfig{etcd: replicaConfig{etcdTimeout: 5 * time.Second}}
	r := &c.etcd
	fs := newFlags("migrate", migrateSynopsis+"\n"+migrateHelp, stdout)
	fs.StringVar(&c.data, "data", "./data", "the bbolt issuer's data `DIR` (the issuer must not be running on it)")
	fs.StringVar(&c.kekFile, "kek", os.Getenv(kekEnv), "the key-encryption key `FILE` DIR's keys are sealed under; the replicas use it too (default $"+kekEnv+", else DIR.kek)")
	// The etcd flags as issuer serve names them, read the same way.
	fs.StringVar(&r.etcd, "etcd", "", "the cluster's etcd `ENDPOINTS`, comma-separated (http://HOST:PORT or https://HOST:PORT; default $"+etcdEnv+")")
	fs.StringVar(&r.prefix, "prefix", "/healthcode/", "the key `PREFIX` the replicas use (their --prefix)")
	addEtcdClientFlags(fs, r, "")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up after `DURATION`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("migrate takes no arguments, got %q", fs.Arg(0))
	}
	if r.etcd == "" {
		r.etcd = os.Getenv(etcdEnv)
	}
	if r.etcdPasswordFile == "" {
		r.etcdPasswordFile = os.Getenv(etcdPasswordFileEnv)
	}
	switch {
	case r.etcd == "":
		return usagef("migrate needs --etcd ENDPOINTS (the cluster's etcd)")
	case c.timeout <= 0:
		return usagef("--timeout must be positive, got %s", c.timeout)
	}
	if err := checkEtcdClientFlags(r); err != nil {
		return err
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

	cfg, err := etcdConfig(c.etcd)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return etcdClientError(c.etcd, cfg, err)
	}
	defer cli.Close()
	prefix := c.etcd.prefix
	dst, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: prefix, KEK: k, OpTimeout: c.etcd.etcdTimeout})
	if err != nil {
		return fmt.Errorf("etcd %s prefix %s: %w", c.etcd.etcd, prefix, err)
	}
	defer dst.Close()

	sum, err := migrate.FromBolt(ctx, src, dst, issuer.SystemClock{}.Now())
	if err != nil {
		if sum.Written {
			return fmt.Errorf("%w\nthe prefix %s now holds part of the configuration: do not start replicas on it; delete it (etcdctl del --prefix %s) and run migrate again", err, prefix, prefix)
		}
		return err
	}
	fmt.Fprintf(stdout, "migrated %s to etcd %s (prefix %s):\n", c.data, c.etcd.etcd, prefix)
	fmt.Fprintf(stdout, "  bundle key: fingerprint %s, the one verifiers pinned\n", sum.Fingerprint)
	fmt.Fprintf(stdout, "  %d signing keys, %d withdrawals; bundle sequence continues above %d\n", sum.Keys, sum.Withdrawals, sum.Sequence)
	fmt.Fprintf(stdout, "  policy version %d, %d attesters, %d admin tokens, %d audit entries\n", sum.Policy, sum.Attesters, sum.AdminTokens, sum.Audit)
	if sum.Expired > 0 {
		fmt.Fprintf(stdout, "  %d records past their deadline were left out (the next sweep would delete them)\n", sum.Expired)
	}
	fmt.Fprintf(stdout, "not moved: replay records and aggregate counts (an attestation redeemed here in the renewal period in progress can redeem once more until it ends; see 'issuer migrate --help')\n")
	fmt.Fprintf(stdout, "next: start the replicas with --etcd %s --prefix %s --kek %s; do not start the bbolt issuer on %s again\n", c.etcd.etcd, prefix, kekFile, c.data)
	return nil
}
