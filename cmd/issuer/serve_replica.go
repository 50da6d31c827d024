package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/redisstore"
	"github.com/healthcode/healthcode/issuer/replicastate"
	"github.com/healthcode/healthcode/policy"
)

// Replica mode (DESIGN §8): `issuer serve --etcd ENDPOINTS --redis ADDRS`
// runs one stateless replica. Replay records and counts live in a Redis
// Cluster, everything else in etcd; --data holds only the local files
// (admin.token, the demo attester key, the fingerprint).

// Environment variables read when the flag is not given (flags win).
const (
	etcdEnv              = "HEALTHCODE_ETCD"
	redisEnv             = "HEALTHCODE_REDIS"
	etcdPasswordFileEnv  = "HEALTHCODE_ETCD_PASSWORD_FILE"
	redisPasswordFileEnv = "HEALTHCODE_REDIS_PASSWORD_FILE"
)

// replicaConfig is the replica mode's part of serveConfig.
type replicaConfig struct {
	etcd, redis string // comma-separated; both or neither
	prefix      string
	id          string // "" is hostname:port

	etcdCA, etcdCert, etcdKey      string
	etcdUser, etcdPasswordFile     string
	etcdDialTimeout, etcdTimeout   time.Duration
	redisCA, redisCert, redisKey   string
	redisUser, redisPasswordFile   string
	redisWait                      int
	redisWaitTimeout, redisTimeout time.Duration
}

func (r replicaConfig) on() bool { return r.etcd != "" || r.redis != "" }

// replicaFlags are the flags that mean something only with --etcd and
// --redis.
var replicaFlags = []string{"prefix", "replica-id", "etcd-ca", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file",
	"etcd-dial-timeout", "etcd-timeout", "redis-ca", "redis-cert", "redis-key", "redis-user", "redis-password-file",
	"redis-wait", "redis-wait-timeout", "redis-timeout"}

func addReplicaFlags(fs *flag.FlagSet, r *replicaConfig) {
	fs.StringVar(&r.etcd, "etcd", "", "run as a replica: etcd client `ENDPOINTS`, comma-separated (http://HOST:PORT or https://HOST:PORT; default $"+etcdEnv+"); needs --redis")
	fs.StringVar(&r.redis, "redis", "", "run as a replica: Redis Cluster node `ADDRS`, comma-separated HOST:PORT (default $"+redisEnv+"); needs --etcd")
	fs.StringVar(&r.prefix, "prefix", "/healthcode/", "replica: key `PREFIX` in etcd and Redis, ending in '/' (one deployment per prefix)")
	fs.StringVar(&r.id, "replica-id", "", "replica: this replica's `ID` in the maintenance election and the logs (default HOSTNAME:PORT)")
	addEtcdClientFlags(fs, r, "replica: ")
	fs.DurationVar(&r.etcdTimeout, "etcd-timeout", 5*time.Second, "replica: how long one etcd request may take, a `DURATION` (bounds the pause while etcd elects a new leader)")
	fs.StringVar(&r.redisCA, "redis-ca", "", "replica: CA certificate `FILE` (PEM) that the Redis nodes' certificates chain to; turns TLS on")
	fs.StringVar(&r.redisCert, "redis-cert", "", "replica: client certificate `FILE` (PEM) for Redis; with --redis-key")
	fs.StringVar(&r.redisKey, "redis-key", "", "replica: client key `FILE` (PEM) for Redis")
	fs.StringVar(&r.redisUser, "redis-user", "", "replica: Redis ACL user `NAME`; with --redis-password-file")
	fs.StringVar(&r.redisPasswordFile, "redis-password-file", "", "replica: `FILE` holding the Redis password (default $"+redisPasswordFileEnv+")")
	fs.IntVar(&r.redisWait, "redis-wait", 0, "replica: replicas of a shard that must acknowledge each replay record (WAIT) before the tokens are sent, `N` (0: none; see README, \"Running it at scale\")")
	fs.DurationVar(&r.redisWaitTimeout, "redis-wait-timeout", time.Second, "replica: how long WAIT waits for --redis-wait acknowledgements, a `DURATION`; shorter than --redis-timeout")
	fs.DurationVar(&r.redisTimeout, "redis-timeout", 3*time.Second, "replica: read and write timeout of one Redis command, a `DURATION`")
}

// addEtcdClientFlags adds the flags of the etcd client's TLS, auth and
// dial timeout, as issuer serve (a replica) and issuer migrate both name
// them; tag begins each usage.
func addEtcdClientFlags(fs *flag.FlagSet, r *replicaConfig, tag string) {
	fs.StringVar(&r.etcdCA, "etcd-ca", "", tag+"CA certificate `FILE` (PEM) that etcd's server certificates chain to; turns TLS on")
	fs.StringVar(&r.etcdCert, "etcd-cert", "", tag+"client certificate `FILE` (PEM) for etcd; with --etcd-key")
	fs.StringVar(&r.etcdKey, "etcd-key", "", tag+"client key `FILE` (PEM) for etcd")
	fs.StringVar(&r.etcdUser, "etcd-user", "", tag+"etcd user `NAME` (etcd auth; the roles it needs: README, \"Running it at scale\"); with --etcd-password-file")
	fs.StringVar(&r.etcdPasswordFile, "etcd-password-file", "", tag+"`FILE` holding the etcd user's password (default $"+etcdPasswordFileEnv+")")
	fs.DurationVar(&r.etcdDialTimeout, "etcd-dial-timeout", 5*time.Second, tag+"how long to wait for a connection to etcd, a `DURATION`")
}

// checkEtcdClientFlags refuses etcd client flags that do not go together,
// and a prefix that is not one, for issuer serve and issuer migrate alike.
func checkEtcdClientFlags(r *replicaConfig) error {
	switch {
	case (r.etcdCert == "") != (r.etcdKey == ""):
		return usagef("--etcd-cert and --etcd-key go together")
	case (r.etcdUser == "") != (r.etcdPasswordFile == ""):
		return usagef("--etcd-user and --etcd-password-file go together")
	case r.etcdDialTimeout <= 0:
		return usagef("--etcd-dial-timeout must be positive")
	case !strings.HasSuffix(r.prefix, "/") || strings.ContainsAny(r.prefix, "{}"):
		return usagef("--prefix must end in '/' and hold no '{' or '}', got %q", r.prefix)
	}
	for _, e := range splitList(r.etcd) {
		if strings.HasPrefix(e, "http://") && (r.etcdCA != "" || r.etcdCert != "") {
			return usagef("--etcd endpoint %s is plain HTTP, but --etcd-ca or --etcd-cert asks for TLS: write it https://", e)
		}
	}
	return nil
}

// checkReplicaFlags applies the environment under the flags and refuses
// combinations that make no sense.
func checkReplicaFlags(fs *flag.FlagSet, r *replicaConfig) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if r.etcd == "" && !set["etcd"] {
		r.etcd = os.Getenv(etcdEnv)
	}
	if r.redis == "" && !set["redis"] {
		r.redis = os.Getenv(redisEnv)
	}
	if r.etcdPasswordFile == "" {
		r.etcdPasswordFile = os.Getenv(etcdPasswordFileEnv)
	}
	if r.redisPasswordFile == "" {
		r.redisPasswordFile = os.Getenv(redisPasswordFileEnv)
	}
	if !r.on() {
		for _, name := range replicaFlags {
			if set[name] {
				return usagef("--%s is for a replica: give --etcd and --redis too", name)
			}
		}
		return nil
	}
	switch {
	case r.etcd == "":
		return usagef("--redis needs --etcd: a replica keeps its replay records in Redis and everything else in etcd")
	case r.redis == "":
		return usagef("--etcd needs --redis: a replica keeps its replay records in Redis and everything else in etcd")
	case (r.redisCert == "") != (r.redisKey == ""):
		return usagef("--redis-cert and --redis-key go together")
	case r.redisUser != "" && r.redisPasswordFile == "":
		return usagef("--redis-user needs --redis-password-file")
	case r.redisWait < 0:
		return usagef("--redis-wait must not be negative, got %d", r.redisWait)
	case r.etcdTimeout <= 0 || r.redisTimeout <= 0 || r.redisWaitTimeout <= 0:
		return usagef("--etcd-timeout, --redis-timeout and --redis-wait-timeout must be positive")
	case r.redisWait > 0 && r.redisWaitTimeout >= r.redisTimeout:
		return usagef("--redis-wait-timeout (%s) must be shorter than --redis-timeout (%s), or the client gives up before WAIT answers", r.redisWaitTimeout, r.redisTimeout)
	}
	if err := checkEtcdClientFlags(r); err != nil {
		return err
	}
	for _, a := range splitList(r.redis) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return usagef("--redis: want HOST:PORT, got %q", a)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// readSecret reads a password file: its first line, which must not be
// empty.
func readSecret(flagName, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("--%s %s: the file is empty", flagName, path)
	}
	return line, nil
}

// clientTLS builds a client TLS configuration from a CA file and a
// certificate pair, any of them "" (system roots, no client certificate).
func clientTLS(what, caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--%s-ca: %w", what, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--%s-ca %s: no PEM certificate in it", what, caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--%s-cert and --%s-key: %w", what, what, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func etcdConfig(r replicaConfig) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   splitList(r.etcd),
		DialTimeout: r.etcdDialTimeout,
		// Find a dead member's connection within seconds, not at the
		// kernel's TCP timeout.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// Learn members added or removed since start.
		AutoSyncInterval: time.Minute,
		// Errors only: the client warns at every retried or cancelled
		// request (each shutdown, each member restart), and the store
		// logs what fails.
		LogConfig: etcdLogConfig(),
		// Connect before New returns (within DialTimeout), and say why
		// not: without it a refused TLS handshake (no client certificate
		// where etcd requires one) shows only as the first request's
		// deadline.
		DialOptions: []grpc.DialOption{grpc.WithReturnConnectionError()},
	}
	tlsOn := r.etcdCA != "" || r.etcdCert != ""
	for _, e := range cfg.Endpoints {
		tlsOn = tlsOn || strings.HasPrefix(e, "https://")
	}
	if tlsOn {
		t, err := clientTLS("etcd", r.etcdCA, r.etcdCert, r.etcdKey)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = t
	}
	if r.etcdUser != "" {
		pw, err := readSecret("etcd-password-file", r.etcdPasswordFile)
		if err != nil {
			return cfg, err
		}
		cfg.Username, cfg.Password = r.etcdUser, pw
	}
	return cfg, nil
}

// etcdClientError is the error of clientv3.New (made from cfg): etcd's
// answer (a wrong password) as it is, or, for a client that could not
// connect within --etcd-dial-timeout, that etcd could not be reached, with
// the last dial or TLS error. Which error a refused client certificate
// leaves is a race (the server's alert, or a broken pipe on the client's
// first write), so a TLS client without a certificate is told what to
// check.
func etcdClientError(r replicaConfig, cfg clientv3.Config, err error) error {
	var answer rpctypes.EtcdError
	if _, ok := status.FromError(err); ok || errors.As(err, &answer) {
		return fmt.Errorf("etcd %s: %w", r.etcd, err)
	}
	hint := ""
	if cfg.TLS != nil && r.etcdCert == "" {
		hint = " (no --etcd-cert given: etcd run with --client-cert-auth refuses a client without one)"
	}
	return fmt.Errorf("etcd could not be reached at %s within %s: %w%s", r.etcd, r.etcdDialTimeout, err, hint)
}

func etcdLogConfig() *zap.Config {
	c := zap.NewProductionConfig()
	c.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	return &c
}

func redisOptions(r replicaConfig) (*redis.ClusterOptions, error) {
	o := &redis.ClusterOptions{
		Addrs:        splitList(r.redis),
		DialTimeout:  r.redisTimeout,
		ReadTimeout:  r.redisTimeout,
		WriteTimeout: r.redisTimeout,
		// Follow a failover's redirections (the store also reloads the
		// layout between its own attempts).
		MaxRedirects: 8,
	}
	if r.redisCA != "" || r.redisCert != "" {
		t, err := clientTLS("redis", r.redisCA, r.redisCert, r.redisKey)
		if err != nil {
			return nil, err
		}
		// Each node's certificate is checked against the host the
		// cluster names it by (crypto/tls infers the name from the
		// address): nodes must announce names or IPs their certificates
		// hold (cluster-announce-ip, cluster-announce-hostname).
		o.TLSConfig = t
	}
	if r.redisPasswordFile != "" {
		pw, err := readSecret("redis-password-file", r.redisPasswordFile)
		if err != nil {
			return nil, err
		}
		o.Username, o.Password = r.redisUser, pw
	}
	return o, nil
}

// partsCache answers /healthz from a check at most a second old, so that
// probes do not become load on etcd and Redis.
type partsCache struct {
	check func(ctx context.Context) []httpapi.Part
	mu    sync.Mutex
	at    time.Time
	last  []httpapi.Part
}

func (p *partsCache) parts(ctx context.Context) []httpapi.Part {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil || time.Since(p.at) >= time.Second {
		p.last, p.at = p.check(ctx), time.Now()
	}
	return p.last
}

// healthTimeout bounds each part's check for /healthz.
const healthTimeout = time.Second

// partCheck is one part's check for /healthz.
type partCheck struct {
	name  string
	check func(ctx context.Context) error
}

// checkParts runs the checks at once, each under its own timeout, so that
// a part that hangs shows as unreachable alone (not every part checked
// after it) and /healthz answers within one timeout.
func checkParts(ctx context.Context, timeout time.Duration, checks ...partCheck) []httpapi.Part {
	out := make([]httpapi.Part, len(checks))
	var wg sync.WaitGroup
	for n, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out[n] = httpapi.Part{Name: c.name, Err: c.check(ctx)}
		}()
	}
	wg.Wait()
	return out
}

// serveReplica runs one replica: the clients, the stores, the issuer on
// them, the HTTP API, the watch that brings every change into force, and
// the election that runs maintenance on one replica.
func serveReplica(ctx context.Context, c serveConfig, pol *policy.Policy, tlsCfg *tls.Config, log *slog.Logger, stdout io.Writer) error {
	r := c.replica
	if c.kek == "" {
		return usagef("--kek FILE is required for a replica: every replica of one deployment uses the same key-encryption key file")
	}
	kekFile, err := resolveKEK(c.kek, c.data)
	if err != nil {
		return err
	}
	k, err := kek.Load(kekFile)
	if err != nil {
		return fmt.Errorf("key-encryption key: %w", err)
	}
	ecfg, err := etcdConfig(r)
	if err != nil {
		return err
	}
	ropts, err := redisOptions(r)
	if err != nil {
		return err
	}
	// The data directory holds only local files: the admin token, the
	// demo attester key, the fingerprint.
	if err := os.MkdirAll(c.data, 0o700); err != nil {
		return err
	}

	// Shutdown order (SPIRE's): HTTP stops first (serveOn), then the
	// background work (serveOn), then the stores and clients (the defers,
	// in reverse).
	ec, err := clientv3.New(ecfg)
	if err != nil {
		return etcdClientError(r, ecfg, err)
	}
	defer ec.Close()
	rc := redis.NewClusterClient(ropts)
	defer rc.Close()

	state, err := etcdstore.New(ctx, ec, etcdstore.Options{Prefix: r.prefix, KEK: k, Clock: issuer.SystemClock{}, Logger: log, OpTimeout: r.etcdTimeout})
	if err != nil {
		return fmt.Errorf("etcd %s: %w", r.etcd, err)
	}
	defer state.Close()
	pingCtx, cancel := context.WithTimeout(ctx, r.redisTimeout)
	err = rc.ForEachMaster(pingCtx, func(ctx context.Context, m *redis.Client) error { return m.Ping(ctx).Err() })
	cancel()
	if err != nil {
		return fmt.Errorf("redis %s: %w", r.redis, err)
	}
	replay, err := redisstore.New(rc, redisstore.Options{EpochKeys: state, Prefix: r.prefix, Clock: issuer.SystemClock{},
		WaitReplicas: r.redisWait, WaitTimeout: r.redisWaitTimeout})
	if err != nil {
		return err
	}
	shared := replicastate.State{Store: state, Replay: replay}

	iss, err := issuer.New(ctx, issuer.Config{Store: replay, State: shared, Clock: issuer.SystemClock{}, Logger: log, Policy: pol,
		InventoryRounding: c.inventoryRounding, InventoryRefresh: c.inventoryRefresh})
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "issuer: "))
	}

	health := &partsCache{check: func(ctx context.Context) []httpapi.Part {
		return checkParts(ctx, healthTimeout,
			partCheck{"etcd", func(ctx context.Context) error {
				_, err := ec.Get(ctx, r.prefix+"healthz", clientv3.WithCountOnly())
				return err
			}},
			partCheck{"redis", func(ctx context.Context) error {
				return rc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.Ping(ctx).Err() })
			}})
	}}

	return serveOn(ctx, c, served{
		iss: iss, tls: tlsCfg, kekFile: kekFile, parts: health.parts,
		welcome: func(w io.Writer, id string) {
			fmt.Fprintf(w, "  replica %s of the deployment under %s (etcd %s, redis %s)\n", id, r.prefix, r.etcd, r.redis)
		},
		background: func(ctx context.Context, id string) error {
			return runReplica(ctx, iss, state, id, log)
		},
	}, log, stdout)
}

// replicaID is --replica-id, or HOSTNAME:PORT of the address served.
func replicaID(given string, addr net.Addr) string {
	if given != "" {
		return given
	}
	host, err := os.Hostname()
	if err != nil {
		host = "replica"
	}
	_, port, _ := net.SplitHostPort(addr.String())
	return net.JoinHostPort(host, port)
}

// runReplica is a replica's background work until ctx ends: a watch on
// etcd that refreshes the issuer on every change, and a campaign in the
// maintenance election whose winner runs the issuer's Run.
func runReplica(ctx context.Context, iss *issuer.Issuer, state *etcdstore.Store, id string, log *slog.Logger) error {
	if leader, err := state.Leader(ctx); err == nil && leader != "" {
		log.Info("replica started", "replica", id, "leader", leader)
	} else {
		log.Info("replica started", "replica", id)
	}
	// Watch coalesces changes and never overlaps its calls: one Refresh
	// at a time. It calls again whenever it re-establishes itself, so a
	// change made while it was down is read too.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		retry(ctx, log, "watch", func() error {
			return state.Watch(ctx, func() {
				// Until it succeeds: no later change may come to retry it.
				for {
					err := iss.Refresh(ctx)
					if err == nil || ctx.Err() != nil {
						return
					}
					log.Error("refresh from etcd failed; retrying", "err", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			})
		})
	}()
	go func() {
		defer wg.Done()
		// etcdstore logs when this replica starts and stops leading.
		retry(ctx, log, "election", func() error { return state.Lead(ctx, id, iss.Run) })
	}()
	wg.Wait()
	return nil
}

// retry runs f until ctx ends, a second apart after a failure.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) {
	for ctx.Err() == nil {
		err := f()
		if ctx.Err() != nil {
			return
		}
		log.Error(what+" ended; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
