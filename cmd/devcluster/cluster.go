package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/internal/testcluster"
)

const (
	etcdMembers   = 3
	redisNodes    = 6 // 3 masters, a replica each
	issuers       = 3
	layoutFile    = "cluster.json"
	kekFile       = "kek"
	adminToken    = "admin.token"
	demoKeyFile   = "demo-attester.key"
	demoAttester  = "demo-lab"
	clusterPrefix = "devcluster" // etcd's initial-cluster-token
)

// layout is what a cluster keeps across down and up: its ports (Redis's
// nodes.conf and etcd's member list hold them, so a restart must reuse
// them) and whether the Redis Cluster has been created.
type layout struct {
	Etcd         []etcdPorts   `json:"etcd"`
	Redis        []redisPorts  `json:"redis"`
	Issuer       []issuerPorts `json:"issuer"`
	RedisCreated bool          `json:"redis_created"`
}

type etcdPorts struct{ Client, Peer int }
type redisPorts struct{ Port, Bus int }
type issuerPorts struct{ HTTP, Metrics int }

func loadLayout(base string) (*layout, bool, error) {
	b, err := os.ReadFile(filepath.Join(base, layoutFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var l layout
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, false, fmt.Errorf("%s: %w", filepath.Join(base, layoutFile), err)
	}
	if len(l.Etcd) != etcdMembers || len(l.Redis) != redisNodes || len(l.Issuer) != issuers {
		return nil, false, fmt.Errorf("%s does not describe %d etcd members, %d Redis nodes and %d issuers; wipe it with make cluster-down CLEAN=1",
			filepath.Join(base, layoutFile), etcdMembers, redisNodes, issuers)
	}
	return &l, true, nil
}

func (l *layout) save(base string) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(base, layoutFile), append(b, '\n'), 0o600)
}

func newLayout() (*layout, error) {
	ports, err := freePorts(2*etcdMembers + 2*redisNodes + 2*issuers)
	if err != nil {
		return nil, err
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	l := &layout{}
	for i := 0; i < etcdMembers; i++ {
		l.Etcd = append(l.Etcd, etcdPorts{next(), next()})
	}
	for i := 0; i < redisNodes; i++ {
		l.Redis = append(l.Redis, redisPorts{next(), next()})
	}
	for i := 0; i < issuers; i++ {
		l.Issuer = append(l.Issuer, issuerPorts{next(), next()})
	}
	return l, nil
}

// cluster is every server of a layout, in start order.
type cluster struct {
	base     string
	l        *layout
	redisCLI string
	etcd     []*server
	redis    []*server
	issuer   []*server
}

func (c *cluster) all() []*server {
	out := append([]*server{}, c.etcd...)
	out = append(out, c.redis...)
	return append(out, c.issuer...)
}

func (c *cluster) etcdEndpoints() []string {
	var out []string
	for _, p := range c.l.Etcd {
		out = append(out, "http://"+addr(p.Client))
	}
	return out
}

func (c *cluster) redisAddrs() []string {
	var out []string
	for _, p := range c.l.Redis {
		out = append(out, addr(p.Port))
	}
	return out
}

func (c *cluster) replicaURL(i int) string { return "http://" + addr(c.l.Issuer[i].HTTP) }

// programs are the paths of the servers and tools (none for down, which
// only signals).
type programs struct{ etcd, redis, redisCLI, issuer string }

// servers lays out every server's directory and command line.
func servers(base string, l *layout, bins programs) *cluster {
	c := &cluster{base: base, l: l, redisCLI: bins.redisCLI}
	var initial []string
	for i, p := range l.Etcd {
		initial = append(initial, fmt.Sprintf("etcd-%d=http://%s", i, addr(p.Peer)))
	}
	for i, p := range l.Etcd {
		name := fmt.Sprintf("etcd-%d", i)
		client, peer := "http://"+addr(p.Client), "http://"+addr(p.Peer)
		c.etcd = append(c.etcd, &server{name: name, addr: addr(p.Client), dir: filepath.Join(base, name), bin: bins.etcd, args: []string{
			"--name", name,
			"--data-dir", filepath.Join(base, name, "data"),
			"--listen-client-urls", client,
			"--advertise-client-urls", client,
			"--listen-peer-urls", peer,
			"--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", // ignored once the data directory exists
			"--initial-cluster-token", clusterPrefix,
			// docs/operating.md, "etcd settings for real deletion": the
			// replicas' scrub forces a snapshot with this many entries.
			"--snapshot-count", strconv.Itoa(testcluster.EtcdSnapshotCount),
			"--max-wals", "1",
			"--logger", "zap",
			"--log-outputs", "stderr",
		}})
	}
	for i, p := range l.Redis {
		name := fmt.Sprintf("redis-%d", i)
		dir := filepath.Join(base, name)
		c.redis = append(c.redis, &server{name: name, addr: addr(p.Port), dir: dir, bin: bins.redis, args: []string{
			"--port", strconv.Itoa(p.Port),
			"--cluster-port", strconv.Itoa(p.Bus),
			"--bind", "127.0.0.1",
			"--protected-mode", "no",
			"--daemonize", "no",
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
			// Durability as README "Running it at scale" recommends.
			"--appendonly", "yes",
			"--appendfsync", "always",
			"--repl-diskless-sync-delay", "0",
			"--save", "",
			"--dir", dir,
		}})
	}
	for i, p := range l.Issuer {
		name := fmt.Sprintf("issuer-%d", i)
		dir := filepath.Join(base, name)
		c.issuer = append(c.issuer, &server{name: name, addr: addr(p.HTTP), dir: dir, bin: bins.issuer, args: []string{
			"serve",
			"--etcd", strings.Join(c.etcdEndpoints(), ","),
			"--redis", strings.Join(c.redisAddrs(), ","),
			// A record is on its shard's replica too before the tokens
			// are sent, as README "Running it at scale" recommends.
			"--redis-wait", "1",
			"--kek", filepath.Join(base, kekFile),
			"--data", dir,
			"--addr", addr(p.HTTP),
			"--metrics-addr", addr(p.Metrics),
			"--replica-id", name,
			"--demo",
		}})
	}
	return c
}

// up starts the cluster in base, or says it is running already.
func up(ctx context.Context, base, issuerBin string, stdout io.Writer) error {
	l, known, err := loadLayout(base)
	if err != nil {
		return err
	}
	if known {
		c := servers(base, l, programs{})
		var running, stopped []string
		for _, s := range c.all() {
			if s.running() != 0 {
				running = append(running, s.name)
			} else {
				stopped = append(stopped, s.name)
			}
		}
		switch {
		case len(stopped) == 0:
			fmt.Fprintf(stdout, "devcluster: already running in %s (make cluster-down stops it)\n", base)
			c.printReplicas(stdout)
			return nil
		case len(running) > 0:
			return fmt.Errorf("partly running in %s (%s up, %s down): run make cluster-down first", base, strings.Join(running, " "), strings.Join(stopped, " "))
		}
		for _, p := range c.ports() {
			if err := checkFree(p.port, p.who); err != nil {
				return fmt.Errorf("%v: the cluster in %s was made on it; free it, or wipe the cluster with make cluster-down CLEAN=1", err, base)
			}
		}
	} else {
		if l, err = newLayout(); err != nil {
			return err
		}
		if err := l.save(base); err != nil {
			return err
		}
	}
	issuerPath, err := exec.LookPath(issuerBin)
	if err != nil {
		return fmt.Errorf("the issuer program: %v (make cluster builds it)", err)
	}
	if issuerPath, err = filepath.Abs(issuerPath); err != nil {
		return err
	}
	bins := programs{issuer: issuerPath}
	for _, b := range []struct {
		path      *string
		name, pkg string
	}{{&bins.etcd, "etcd", "etcd-server"}, {&bins.redis, "redis-server", "redis-server"}, {&bins.redisCLI, "redis-cli", "redis-tools"}} {
		if *b.path, err = exec.LookPath(b.name); err != nil {
			return fmt.Errorf("%s not found (install Debian's %s package): %v", b.name, b.pkg, err)
		}
	}
	c := servers(base, l, bins)
	if err := c.start(ctx); err != nil {
		left := c.stopStarted()
		msg := err.Error() + "\nstopped what this run had started"
		if len(left) > 0 {
			msg += fmt.Sprintf("; process groups %v did not stop", left)
		}
		return errors.New(msg)
	}
	fmt.Fprintf(stdout, "devcluster: running in %s (etcd %s; Redis %s)\n", base,
		strings.Join(c.etcdEndpoints(), ","), strings.Join(c.redisAddrs(), ","))
	fmt.Fprintf(stdout, "  admin token: %s   demo attester %q key: %s\n", filepath.Join(base, adminToken), demoAttester, filepath.Join(base, demoKeyFile))
	fmt.Fprintf(stdout, "  logs: %s/*/%s   stop: make cluster-down\n", base, logFile)
	c.printReplicas(stdout)
	return nil
}

func (c *cluster) printReplicas(w io.Writer) {
	for i := range c.l.Issuer {
		fmt.Fprintf(w, "replica: %s\n", c.replicaURL(i))
	}
}

type portUse struct {
	port int
	who  string
}

func (c *cluster) ports() []portUse {
	var out []portUse
	for i, p := range c.l.Etcd {
		out = append(out, portUse{p.Client, fmt.Sprintf("etcd-%d client", i)}, portUse{p.Peer, fmt.Sprintf("etcd-%d peer", i)})
	}
	for i, p := range c.l.Redis {
		out = append(out, portUse{p.Port, fmt.Sprintf("redis-%d", i)}, portUse{p.Bus, fmt.Sprintf("redis-%d cluster bus", i)})
	}
	for i, p := range c.l.Issuer {
		out = append(out, portUse{p.HTTP, fmt.Sprintf("issuer-%d HTTP", i)}, portUse{p.Metrics, fmt.Sprintf("issuer-%d metrics", i)})
	}
	return out
}

// start brings every part up in order and waits until each is ready:
// etcd healthy, the Redis Cluster cluster_state:ok with every replica
// linked, each issuer answering /healthz.
func (c *cluster) start(ctx context.Context) error {
	// The KEK is shared by every replica, and made here so that they do
	// not race to create it.
	if _, _, err := kek.LoadOrCreate(filepath.Join(c.base, kekFile)); err != nil {
		return fmt.Errorf("key-encryption key: %w", err)
	}
	demoKey, err := demoAttesterKey(filepath.Join(c.base, demoKeyFile))
	if err != nil {
		return err
	}
	if err := startAll(ctx, c.etcd, "healthy", func(s *server) func() error {
		return func() error { return testcluster.EtcdHealthy(s.addr) }
	}); err != nil {
		return err
	}
	if err := startAll(ctx, c.redis, "answering PING", func(s *server) func() error {
		return func() error { return testcluster.RedisPing(s.addr) }
	}); err != nil {
		return err
	}
	if !c.l.RedisCreated {
		args := append([]string{"--cluster", "create"}, c.redisAddrs()...)
		args = append(args, "--cluster-replicas", "1", "--cluster-yes")
		cctx, cancel := context.WithTimeout(ctx, readyTimeout)
		out, err := exec.CommandContext(cctx, c.redisCLI, args...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
		}
		c.l.RedisCreated = true
		if err := c.l.save(c.base); err != nil {
			return err
		}
	}
	for _, s := range c.redis {
		if err := s.waitFor(ctx, "in a healthy cluster", func() error { return testcluster.RedisHealthy(s.addr) }); err != nil {
			return err
		}
	}
	// Each replica registers DIR/demo-attester.key as demo-lab if etcd
	// does not hold it yet: they all get the same key, and the first
	// starts alone so that it registers the key and makes the admin token
	// before the others look.
	for _, s := range c.issuer {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return err
		}
		if err := keyfile.Write(filepath.Join(s.dir, demoKeyFile), demoKey, true); err != nil {
			return err
		}
	}
	healthz := func(s *server) func() error {
		return func() error { return issuerHealth("http://" + s.addr) }
	}
	if err := startAll(ctx, c.issuer[:1], "answering /healthz", healthz); err != nil {
		return err
	}
	if err := startAll(ctx, c.issuer[1:], "answering /healthz", healthz); err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(c.issuer[0].dir, adminToken))
	switch {
	case err == nil:
		return atomicfile.Write(filepath.Join(c.base, adminToken), tok, 0o600)
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(c.base, adminToken)); serr == nil {
			return nil // made at an earlier start
		}
		return fmt.Errorf("%s made no admin token (etcd already held one); make cluster-down CLEAN=1 starts afresh", c.issuer[0].name)
	default:
		return err
	}
}

// startAll starts servers and waits for each to be ready.
func startAll(ctx context.Context, ss []*server, what string, ready func(*server) func() error) error {
	for _, s := range ss {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.start(); err != nil {
			return err
		}
	}
	for _, s := range ss {
		if err := s.waitFor(ctx, what, ready(s)); err != nil {
			return err
		}
	}
	return nil
}

// stopStarted stops the servers this run started, after a failure.
func (c *cluster) stopStarted() []int {
	var pgids []int
	for _, s := range c.all() {
		if s.pid != 0 {
			pgids = append(pgids, s.pid)
		}
	}
	left := stopGroups(pgids)
	for _, s := range c.all() {
		if s.pid != 0 {
			os.Remove(s.pidPath())
		}
	}
	return left
}

// down stops every server of the cluster in base: the issuers first, then
// Redis and etcd, each with SIGTERM and SIGKILL after stopTimeout.
func down(base string, clean bool, stdout io.Writer) error {
	l, known, err := loadLayout(base)
	if err != nil {
		return err
	}
	if !known {
		fmt.Fprintf(stdout, "devcluster: no cluster in %s\n", base)
		return nil
	}
	c := servers(base, l, programs{})
	stopped := 0
	for _, tier := range [][]*server{c.issuer, c.redis, c.etcd} {
		var pgids []int
		for _, s := range tier {
			if pid := s.running(); pid != 0 {
				pgids = append(pgids, pid)
			}
		}
		if left := stopGroups(pgids); len(left) > 0 {
			return fmt.Errorf("process groups %v are still alive after SIGKILL", left)
		}
		stopped += len(pgids)
	}
	// Verify: no server's process is left.
	var left []string
	for _, s := range c.all() {
		if s.running() != 0 {
			left = append(left, s.name)
		}
		os.Remove(s.pidPath())
	}
	if len(left) > 0 {
		return fmt.Errorf("still running: %s", strings.Join(left, " "))
	}
	fmt.Fprintf(stdout, "devcluster: stopped %d processes; none of the cluster's %d servers is running\n", stopped, len(c.all()))
	if clean {
		if err := os.RemoveAll(base); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "devcluster: deleted %s\n", base)
		return nil
	}
	fmt.Fprintf(stdout, "devcluster: data kept in %s (make cluster starts it again on it; make cluster-down CLEAN=1 deletes it)\n", base)
	return nil
}

func demoAttesterKey(path string) (ed25519.PrivateKey, error) {
	key, err := keyfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, k, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		if err := keyfile.Write(path, k, false); err != nil {
			return nil, err
		}
		key, err = keyfile.Read(path)
	}
	if err != nil {
		return nil, fmt.Errorf("demo attester key: %w", err)
	}
	return key, nil
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func getOK(url string) ([]byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, nil
}

// issuerHealth wants status ok: a replica that cannot reach etcd or Redis
// answers 200 with status degraded.
func issuerHealth(url string) error {
	body, err := getOK(url + "/healthz")
	if err != nil {
		return err
	}
	var h struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Status != "ok" {
		return fmt.Errorf("/healthz answered %s", body)
	}
	return nil
}
