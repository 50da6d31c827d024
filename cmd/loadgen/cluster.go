//go:build linux

package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/internal/preload"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer/redisstore"
)

const clusterUsage = `loadgen cluster: issuer replicas on etcd and a Redis Cluster (make bench-cluster), loopback only

Usage:
  loadgen cluster --issuer BIN [--replicas 3] [--duration 20s] [flags]

Starts a 3-member etcd and a 3+3 Redis Cluster (AOF, appendfsync always;
Debian's etcd and redis-server) on free 127.0.0.1 ports in a temp
directory, then issuer replicas (BIN serve --etcd --redis, one shared KEK),
one more before each run: 1, 2, ... --replicas. Each run sends redemptions
from --concurrency clients round-robin over the replicas for --duration
and measures redemptions/s, p50/p99, the CPU per redemption of each
process kind (issuer, redis-server, etcd, loadgen itself: /proc/PID/stat,
also net of each kind's idle CPU measured just before the run) and the
requests per redemption each store served (Redis INFO commandstats on the
masters; etcd's gRPC counters). Then the Redis memory of --memory-records
replay records written through issuer/redisstore (INFO used_memory on the
masters, before and after). Everything it started is stopped at the end.

Flags:
`

// Bounds and fixed parts of a cluster run.
const (
	maxReplicas = 8
	// clusterIdle is the window, before each run, in which each kind's
	// CPU without load is measured.
	clusterIdle = 3 * time.Second
	// clusterRate sizes each run's pre-signed pool: above what the shared
	// two cores redeem through replicas.
	clusterRate = 2500
	memPrefix   = "loadgen-memory:"
	memWriters  = 8
)

type clusterOptions struct {
	issuerBin     string
	replicas      int
	concurrency   int
	duration      time.Duration
	timeout       time.Duration
	redisWait     int
	memoryRecords int
	jsonPath      string
	keep          bool
	tmpParent     string // where the temp dir goes ("": the system's)
}

func parseClusterOptions(args []string, stderr io.Writer) (clusterOptions, error) {
	var o clusterOptions
	fs := flag.NewFlagSet("loadgen cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, clusterUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.issuerBin, "issuer", "", "issuer binary to start and stop as replicas")
	fs.IntVar(&o.replicas, "replicas", 3, "runs with 1, 2, ... this many replicas")
	fs.IntVar(&o.concurrency, "concurrency", 64, "concurrent HTTP redemptions, spread over the replicas")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "load of each run")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.IntVar(&o.redisWait, "redis-wait", 1, "replicas' --redis-wait: Redis replicas that acknowledge each record before the answer")
	fs.IntVar(&o.memoryRecords, "memory-records", 100_000, "replay records written through issuer/redisstore to measure Redis memory per record (0: skip)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the result as JSON to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (server data and logs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usagef("%v", err)
	}
	switch {
	case fs.NArg() != 0:
		return o, usagef("cluster: no arguments expected, got %q", fs.Arg(0))
	case o.issuerBin == "":
		return o, usagef("cluster: --issuer BIN is required")
	case o.replicas < 1 || o.replicas > maxReplicas:
		return o, usagef("cluster: --replicas must be between 1 and %d, got %d", maxReplicas, o.replicas)
	case o.concurrency < 1 || o.concurrency > maxConcurrency:
		return o, usagef("cluster: --concurrency must be between 1 and %d, got %d", maxConcurrency, o.concurrency)
	case o.duration < time.Second || o.duration > 10*time.Minute:
		return o, usagef("cluster: --duration must be between 1s and 10m, got %s", o.duration)
	case o.timeout <= 0 || o.timeout > time.Minute:
		return o, usagef("cluster: --timeout must be between 1ns and 1m, got %s", o.timeout)
	case o.redisWait < 0 || o.redisWait > 1:
		// The test cluster has one replica per master.
		return o, usagef("cluster: --redis-wait must be 0 or 1 (the cluster has one replica per master), got %d", o.redisWait)
	case o.memoryRecords < 0 || o.memoryRecords > 2_000_000:
		return o, usagef("cluster: --memory-records must be between 0 and 2000000, got %d", o.memoryRecords)
	}
	return o, nil
}

// ClusterResult is what one bench-cluster run measured.
type ClusterResult struct {
	Cores     int          `json:"cores"`
	RedisWait int          `json:"redis_wait"`
	Runs      []ClusterRun `json:"runs"`
	Memory    *RedisMemory `json:"redis_memory,omitempty"`
	// NotCovered says what the figures do not show.
	NotCovered []string `json:"not_covered"`
}

// ClusterRun is the load through one number of replicas.
type ClusterRun struct {
	Replicas    int       `json:"replicas"`
	Load        *Result   `json:"load"`
	LoadAverage [2]string `json:"load_average"` // /proc/loadavg before and after
	CPU         []KindCPU `json:"cpu"`
	// Requests each store served per redemption: Redis commands executed
	// on the masters (a script's own calls counted beside the script;
	// loadgen's INFO and replication's REPLCONF left out), etcd unary gRPC
	// calls and stream messages on every member.
	Redis      map[string]float64 `json:"redis_commands"`
	RedisTotal float64            `json:"redis_commands_total"`
	// RedisReads is the masters' read events (INFO total_reads_processed)
	// per redemption: one per request or pipeline a client sends, so the
	// round trips, plus the Redis replicas' acknowledgements (about one
	// per WAIT, and one a second each).
	RedisReads       float64            `json:"redis_reads"`
	Etcd             map[string]float64 `json:"etcd_requests"`
	EtcdTotal        float64            `json:"etcd_requests_total"`
	EtcdPerS         float64            `json:"etcd_requests_per_s"` // over the run, all replicas
	RedisKeysAtStart int64              `json:"redis_keys_at_start"`
}

// RedisMemory is the masters' memory growth over Records replay records
// written through issuer/redisstore.
type RedisMemory struct {
	Records          int     `json:"records"`
	KeysAdded        int64   `json:"keys_added"`
	UsedBytes        int64   `json:"used_memory_delta"`
	DatasetBytes     int64   `json:"used_memory_dataset_delta"`
	BytesPerRecord   float64 `json:"bytes_per_record"`
	DatasetPerRecord float64 `json:"dataset_bytes_per_record"`
	// TablesPerKey is the keyspace's hash tables (keys and expiries;
	// MEMORY STATS overhead.hashtable.main and .expires) per key: INFO
	// counts them as overhead, but they grow with the records.
	TablesPerKey float64 `json:"hashtable_bytes_per_key"`
	Seconds      float64 `json:"write_s"`
}

var clusterNotCovered = []string{
	"this machine's cores are shared: the replicas, six Redis servers, three etcd members and loadgen itself compete for them, so throughput does not grow with replicas here; the CPU per redemption of each kind is the figure to size with",
	"all servers on one host over loopback: no network latency between replicas, Redis and etcd, and no TLS between them",
	"Redis with one replica per master and appendfsync always on one disk shared by all six nodes",
	"key rotation, bundle signing and sweeps run on the maintenance leader during the runs; their CPU is in the issuer figure, mostly in the idle part",
}

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseClusterOptions(args, stderr)
	if err != nil {
		return err
	}
	res, err := cluster(ctx, o, stderr)
	if res != nil && (len(res.Runs) > 0 || res.Memory != nil) {
		printCluster(stdout, res)
		if o.jsonPath != "" {
			b, jerr := json.MarshalIndent(res, "", "  ")
			if jerr == nil {
				jerr = os.WriteFile(o.jsonPath, append(b, '\n'), 0o644)
			}
			err = errors.Join(err, jerr)
		}
	}
	return err
}

// clusterProcs is what loadgen cluster started; stop ends all of it.
type clusterProcs struct {
	etcd     *testcluster.EtcdCluster
	redis    *testcluster.RedisCluster
	replicas []*issuerProc
}

func (c *clusterProcs) stop() error {
	var errs []error
	for _, p := range c.replicas {
		errs = append(errs, p.Stop())
	}
	if c.redis != nil {
		errs = append(errs, c.redis.Stop())
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Stop())
	}
	return errors.Join(errs...)
}

// groups are the process kinds whose CPU is measured: every replica,
// every Redis node, every etcd member, loadgen itself; then the Redis
// nodes again split by role (master[i] says node i is a master), since
// each master is one busy thread and sizing needs its share.
func (c *clusterProcs) groups(master []bool) []procGroup {
	var is, rs, es, ms, ss []int
	for _, p := range c.replicas {
		is = append(is, p.PID())
	}
	for i, n := range c.redis.Nodes {
		rs = append(rs, n.PID())
		if master[i] {
			ms = append(ms, n.PID())
		} else {
			ss = append(ss, n.PID())
		}
	}
	for _, m := range c.etcd.Members {
		es = append(es, m.PID())
	}
	return []procGroup{{"issuer", is}, {"redis-server", rs}, {"etcd", es}, {"loadgen", []int{os.Getpid()}},
		{"redis masters", ms}, {"redis replicas", ss}}
}

func cluster(ctx context.Context, o clusterOptions, stderr io.Writer) (res *ClusterResult, err error) {
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "bench-cluster: "+format+"\n", a...) }
	tmp, err := os.MkdirTemp(o.tmpParent, "bench-cluster-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if o.keep || err != nil {
			say("server data and logs kept in %s", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()
	procs := &clusterProcs{}
	defer func() {
		if serr := procs.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	t := time.Now()
	if procs.etcd, err = testcluster.LaunchEtcd(tmp); err != nil {
		return nil, err
	}
	if procs.redis, err = testcluster.LaunchRedis(tmp); err != nil {
		return nil, err
	}
	say("etcd %v and Redis Cluster %v up in %.1f s", procs.etcd.Endpoints(), procs.redis.Addrs(), time.Since(t).Seconds())

	nodes := make([]*redis.Client, len(procs.redis.Nodes))
	for i, n := range procs.redis.Nodes {
		nodes[i] = redis.NewClient(&redis.Options{Addr: n.Addr, PoolSize: 1, DialTimeout: 2 * time.Second})
		defer nodes[i].Close()
	}
	metrics := newClient(2, 5*time.Second)
	defer metrics.CloseIdleConnections()
	readStores := func() ([]redisCounts, map[string]int64, error) {
		rcs := make([]redisCounts, len(nodes))
		for i, c := range nodes {
			r, err := redisInfo(ctx, c)
			if err != nil {
				return nil, nil, fmt.Errorf("redis %s: %w", procs.redis.Nodes[i].Addr, err)
			}
			rcs[i] = r
		}
		var es []map[string]int64
		for _, m := range procs.etcd.Members {
			e, err := etcdRequests(ctx, metrics, m.Addr)
			if err != nil {
				return nil, nil, err
			}
			es = append(es, e)
		}
		return rcs, sumMaps(es), nil
	}

	res = &ClusterResult{Cores: runtime.NumCPU(), RedisWait: o.redisWait, NotCovered: clusterNotCovered}
	for n := 1; n <= o.replicas; n++ {
		var key ed25519.PrivateKey
		if n > 1 {
			if key, err = procs.replicas[0].DemoKey(); err != nil {
				return res, err
			}
		}
		p, err := startReplica(ctx, o.issuerBin, tmp, n, procs.etcd.Endpoints(), procs.redis.Addrs(), key,
			"--redis-wait", strconv.Itoa(o.redisWait))
		if err != nil {
			return res, err
		}
		procs.replicas = append(procs.replicas, p)
		say("replica %d at %s (pid %d), started in %.0f ms", n, p.URL, p.PID(), ms(p.Startup))
		run, err := clusterRun(ctx, o, procs, readStores, say)
		if err != nil {
			return res, fmt.Errorf("%d replicas: %w", n, err)
		}
		res.Runs = append(res.Runs, *run)
	}
	if o.memoryRecords > 0 {
		say("writing %d replay records through issuer/redisstore for Redis memory per record", o.memoryRecords)
		if res.Memory, err = redisMemory(ctx, procs.redis, nodes, o.memoryRecords); err != nil {
			return res, err
		}
	}
	return res, nil
}

// startReplica starts replica n (1, 2, ...) of an issuer on etcd and
// Redis: BIN serve --etcd --redis with the KEK base/issuer.kek shared by
// all (the first makes it), its own data directory base/issuer-N and log
// base/issuer-N.log. demoKey, if not nil, is written into that directory
// first: each replica registers DIR/demo-attester.key as demo-lab unless
// etcd holds it, so all but the first get the first one's.
func startReplica(ctx context.Context, bin, base string, n int, etcd, redisAddrs []string, demoKey ed25519.PrivateKey, extra ...string) (*issuerProc, error) {
	data := filepath.Join(base, fmt.Sprintf("issuer-%d", n))
	if demoKey != nil {
		if err := os.MkdirAll(data, 0o700); err != nil {
			return nil, err
		}
		if err := keyfile.Write(filepath.Join(data, demoKeyFile), demoKey, true); err != nil {
			return nil, err
		}
	}
	// A replica never makes the KEK: the operator gives every one the same.
	kekPath := filepath.Join(base, "issuer.kek")
	if _, _, err := kek.LoadOrCreate(kekPath); err != nil {
		return nil, err
	}
	args := append([]string{"--kek", kekPath, "--replica-id", "replica-" + strconv.Itoa(n),
		"--etcd", strings.Join(etcd, ","), "--redis", strings.Join(redisAddrs, ",")}, extra...)
	p, err := startIssuer(ctx, bin, data, filepath.Join(base, fmt.Sprintf("issuer-%d.log", n)), args...)
	if err != nil {
		return nil, fmt.Errorf("replica %d: %w", n, err)
	}
	return p, nil
}

func clusterRun(ctx context.Context, o clusterOptions, procs *clusterProcs, readStores func() ([]redisCounts, map[string]int64, error), say func(string, ...any)) (*ClusterRun, error) {
	first := procs.replicas[0]
	key, err := first.DemoKey()
	if err != nil {
		return nil, err
	}
	var more []string
	for _, p := range procs.replicas[1:] {
		more = append(more, p.URL)
	}
	pool := min(maxRequests, int(o.duration.Seconds()*clusterRate))
	atts, err := presign(key, demoAttesterID, pool, time.Now())
	if err != nil {
		return nil, err
	}
	roles, _, err := readStores()
	if err != nil {
		return nil, err
	}
	master := make([]bool, len(roles))
	for i, r := range roles {
		master[i] = r.master
	}
	groups := procs.groups(master)

	// Idle: each kind's CPU with no load.
	idleBefore, err := groupCPU(groups)
	if err != nil {
		return nil, err
	}
	idleStart := time.Now()
	select {
	case <-time.After(clusterIdle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	idleAfter, err := groupCPU(groups)
	if err != nil {
		return nil, err
	}
	idle := time.Since(idleStart)

	run := &ClusterRun{Replicas: len(procs.replicas)}
	run.LoadAverage[0] = loadAverage()
	redisBefore, etcdBefore, err := readStores()
	if err != nil {
		return nil, err
	}
	for _, r := range redisBefore {
		if r.master {
			run.RedisKeysAtStart += r.keys
		}
	}
	cpuBefore, err := groupCPU(groups)
	if err != nil {
		return nil, err
	}
	say("%d replica(s): %d clients for %s", run.Replicas, o.concurrency, o.duration)
	load, err := Run(ctx, Config{URL: first.URL, More: more, Key: key, AttesterID: demoAttesterID,
		Concurrency: o.concurrency, Duration: o.duration, Presigned: atts, Timeout: o.timeout})
	if err != nil {
		return nil, err
	}
	cpuAfter, err := groupCPU(groups)
	if err != nil {
		return nil, err
	}
	redisAfter, etcdAfter, err := readStores()
	if err != nil {
		return nil, err
	}
	run.LoadAverage[1] = loadAverage()
	run.Load = load
	elapsed := time.Duration(load.ElapsedSeconds * float64(time.Second))
	for i, g := range groups {
		run.CPU = append(run.CPU, kindCPU(g, idleBefore[i], idleAfter[i], cpuBefore[i], cpuAfter[i], idle, elapsed, load.OK))
	}
	run.Redis, run.RedisTotal = perRedemption(sumCalls(redisBefore), sumCalls(redisAfter), load.OK, redisNotPerRedemption)
	if load.OK > 0 {
		run.RedisReads = float64(sumReads(redisAfter)-sumReads(redisBefore)) / float64(load.OK)
	}
	run.Etcd, run.EtcdTotal = perRedemption(etcdBefore, etcdAfter, load.OK, nil)
	if load.ElapsedSeconds > 0 {
		run.EtcdPerS = run.EtcdTotal * float64(load.OK) / load.ElapsedSeconds
	}
	if load.ErrorCount > 0 {
		return run, fmt.Errorf("%w: %d of %d", errFailed, load.ErrorCount, load.Requests)
	}
	return run, nil
}

// redisMemory writes n replay records through issuer/redisstore (the
// replicas' record format; its own key and prefix) and reads the masters'
// memory before and after.
func redisMemory(ctx context.Context, rc *testcluster.RedisCluster, nodes []*redis.Client, n int) (*RedisMemory, error) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRedirects: 8})
	defer cc.Close()
	s, err := redisstore.New(cc, redisstore.Options{EpochKeys: &epochKeys{keys: map[int64][]byte{}}, Prefix: memPrefix})
	if err != nil {
		return nil, err
	}
	masters := func() (used, dataset, keys int64, err error) {
		for _, c := range nodes {
			r, err := redisInfo(ctx, c)
			if err != nil {
				return 0, 0, 0, err
			}
			if r.master {
				used, dataset, keys = used+r.usedMemory, dataset+r.datasetMem, keys+r.keys
			}
		}
		return used, dataset, keys, nil
	}
	u0, d0, k0, err := masters()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	t := time.Now()
	// Writers in parallel: redisstore writes a request's keys one by one.
	errs := make(chan error, memWriters)
	for w := range memWriters {
		go func() {
			share := n / memWriters
			if w == 0 {
				share += n % memWriters
			}
			errs <- preload.Replay(ctx, s, now, share, 1000, "memory-lab", fmt.Sprintf("m%d-", w), preload.Spread(now, 3))
		}()
	}
	for range memWriters {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return nil, err
	}
	took := time.Since(t)
	u1, d1, k1, err := masters()
	if err != nil {
		return nil, err
	}
	m := &RedisMemory{Records: n, KeysAdded: k1 - k0, UsedBytes: u1 - u0, DatasetBytes: d1 - d0, Seconds: took.Seconds()}
	m.BytesPerRecord = float64(m.UsedBytes) / float64(n)
	m.DatasetPerRecord = float64(m.DatasetBytes) / float64(n)
	var tables, keys float64
	for _, c := range nodes {
		st, err := memoryStats(ctx, c)
		if err != nil {
			return nil, err
		}
		if st["role"] == 1 {
			tables += st["overhead.hashtable.main"] + st["overhead.hashtable.expires"]
			keys += st["keys.count"]
		}
	}
	if keys > 0 {
		m.TablesPerKey = tables / keys
	}
	return m, nil
}

// memoryStats reads MEMORY STATS's numbers (the keyspace's hash tables
// are overhead to INFO, but grow with the records), with "role" 1 on a
// master.
func memoryStats(ctx context.Context, c *redis.Client) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return nil, err
	}
	v, err := c.Do(ctx, "MEMORY", "STATS").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	if len(role) > 0 && role[0] == "master" {
		out["role"] = 1
	}
	// Numbers by name; a database's own map ("db.0": overhead of its
	// hash tables) is added up over the databases.
	var put func(k, v any)
	put = func(k, v any) {
		name, _ := k.(string)
		switch x := v.(type) {
		case int64:
			out[name] += float64(x)
		case float64:
			out[name] += x
		case map[any]any:
			for k, v := range x {
				put(k, v)
			}
		case []any:
			for i := 0; i+1 < len(x); i += 2 {
				put(x[i], x[i+1])
			}
		}
	}
	switch v.(type) {
	case map[any]any, []any: // RESP3, RESP2
		put("", v)
	default:
		return nil, fmt.Errorf("MEMORY STATS: unexpected answer %T", v)
	}
	return out, nil
}

// epochKeys is a random key per epoch, made on first use: the records
// written for the memory figure need keys of the replicas' size, not
// theirs.
type epochKeys struct {
	mu   sync.Mutex
	keys map[int64][]byte
}

func (e *epochKeys) EpochKey(_ context.Context, end time.Time) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k, ok := e.keys[end.Unix()]
	if !ok {
		k = make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		e.keys[end.Unix()] = k
	}
	return k, nil
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func printCluster(w io.Writer, r *ClusterResult) {
	fmt.Fprintf(w, "bench-cluster: issuer replicas on a 3-member etcd and a 3+3 Redis Cluster, %d cores shared by all, --redis-wait %d\n", r.Cores, r.RedisWait)
	fmt.Fprintf(w, "  %-8s %13s %9s %9s %10s %10s %10s %10s %11s %11s %9s  %s\n", "replicas", "redemptions/s", "p50 ms", "p99 ms", "errors",
		"issuer µs", "redis µs", "etcd µs", "loadgen µs", "redis reads", "etcd req", "load average")
	for _, run := range r.Runs {
		l := run.Load
		cpu := map[string]KindCPU{}
		for _, k := range run.CPU {
			cpu[k.Kind] = k
		}
		c := func(kind string) string {
			k := cpu[kind]
			return fmt.Sprintf("%.0f (%.0f)", k.PerRedemptionUs, k.NetPerRedemptionUs)
		}
		fmt.Fprintf(w, "  %-8d %13.0f %9.1f %9.1f %10d %10s %10s %10s %11s %11.2f %9.3f  %s → %s\n", run.Replicas, l.RedemptionsPerS, l.LatencyMs.P50, l.LatencyMs.P99, l.ErrorCount,
			c("issuer"), c("redis-server"), c("etcd"), c("loadgen"), run.RedisReads, run.EtcdTotal, run.LoadAverage[0], run.LoadAverage[1])
	}
	fmt.Fprintln(w, "  CPU: µs per redemption, user+system of every process of the kind (/proc/PID/stat), over the run; in")
	fmt.Fprintln(w, "  parentheses net of the kind's idle CPU per second, measured for 3 s before the run.")
	fmt.Fprintln(w, "  redis reads: read events on the Redis masters per redemption (INFO total_reads_processed): one per")
	fmt.Fprintln(w, "  request or pipeline a client sends (round trips), plus the Redis replicas' acknowledgements of WAIT.")
	for _, run := range r.Runs {
		fmt.Fprintf(w, "  %d replica(s): %d redemptions in %.1f s; Redis commands executed per redemption (masters; a script's own calls\n", run.Replicas, run.Load.OK, run.Load.ElapsedSeconds)
		fmt.Fprintf(w, "    counted too) %.2f: %s; etcd requests per redemption %.3f (%.1f/s): %s\n", run.RedisTotal, breakdown(run.Redis), run.EtcdTotal, run.EtcdPerS, breakdown(run.Etcd))
		for _, k := range run.CPU {
			if strings.HasPrefix(k.Kind, "redis ") {
				fmt.Fprintf(w, "    %s (%d): %.0f µs per redemption (net %.0f; idle %.3f CPU-s/s)\n", k.Kind, k.Processes, k.PerRedemptionUs, k.NetPerRedemptionUs, k.IdlePerS)
			}
		}
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "  Redis memory: %d replay records through issuer/redisstore (%d keys added, %.1f s): used_memory on the masters +%.1f MiB,\n", m.Records, m.KeysAdded, m.Seconds, float64(m.UsedBytes)/(1<<20))
		fmt.Fprintf(w, "    %.0f bytes per record (used_memory_dataset %.0f, plus the keyspace's hash tables %.0f per key); each Redis replica holds a copy as large\n",
			m.BytesPerRecord, m.DatasetPerRecord, m.TablesPerKey)
	}
	fmt.Fprintln(w, "  Not covered:")
	for _, s := range r.NotCovered {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	for _, run := range r.Runs {
		cpu := map[string]float64{}
		for _, k := range run.CPU {
			cpu[k.Kind] = k.NetPerRedemptionUs
		}
		fmt.Fprintf(w, "bench-cluster: replicas=%d redemptions_per_s=%.0f p99_ms=%.1f issuer_us=%.0f redis_us=%.0f etcd_us=%.0f redis_reads=%.2f etcd_req=%.3f\n",
			run.Replicas, run.Load.RedemptionsPerS, run.Load.LatencyMs.P99, cpu["issuer"], cpu["redis-server"], cpu["etcd"], run.RedisReads, run.EtcdTotal)
	}
}
