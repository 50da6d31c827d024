package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// What loadgen cluster reads from the servers it started, before and
// after each run: CPU from /proc, commands served from Redis INFO and
// etcd's /metrics. Figures are per redemption: the delta over a run
// divided by the redemptions answered 200 in it.

// procGroup is the processes of one kind (issuer replicas, redis-server,
// etcd) whose CPU is summed.
type procGroup struct {
	Kind string
	PIDs []int
}

// groupCPU is the summed utime+stime of each group, in the groups' order.
func groupCPU(groups []procGroup) ([]cpuTicks, error) {
	out := make([]cpuTicks, len(groups))
	for i, g := range groups {
		for _, pid := range g.PIDs {
			t, err := readCPU(pid)
			if err != nil {
				return nil, fmt.Errorf("%s pid %d: %w", g.Kind, pid, err)
			}
			out[i].user += t.user
			out[i].system += t.system
		}
	}
	return out, nil
}

// KindCPU is one process kind's CPU over a run.
type KindCPU struct {
	Kind      string  `json:"kind"`
	Processes int     `json:"processes"`
	Seconds   float64 `json:"cpu_s"`
	// IdlePerS is the kind's CPU per second with no load, measured just
	// before the run (heartbeats, cluster bus, the replicas' own
	// maintenance); NetPerRedemptionUs subtracts it over the run's span.
	IdlePerS           float64 `json:"idle_cpu_per_s"`
	PerRedemptionUs    float64 `json:"per_redemption_us"`
	NetPerRedemptionUs float64 `json:"net_per_redemption_us"`
}

func kindCPU(g procGroup, idleBefore, idleAfter, before, after cpuTicks, idle, elapsed time.Duration, ok int) KindCPU {
	k := KindCPU{Kind: g.Kind, Processes: len(g.PIDs), Seconds: after.sub(before).Seconds()}
	if idle > 0 {
		k.IdlePerS = idleAfter.sub(idleBefore).Seconds() / idle.Seconds()
	}
	if ok > 0 {
		k.PerRedemptionUs = k.Seconds / float64(ok) * 1e6
		k.NetPerRedemptionUs = max(0, k.Seconds-k.IdlePerS*elapsed.Seconds()) / float64(ok) * 1e6
	}
	return k
}

// redisCounts is what INFO says of one node: its role, the calls of each
// command (commandstats) and its memory.
type redisCounts struct {
	master      bool
	calls       map[string]int64
	usedMemory  int64
	datasetMem  int64
	keys        int64
	readsEvents int64
}

// redisInfo reads INFO replication, commandstats, memory, keyspace and
// stats from one node: one command, counted as "info" in the next
// reading (and left out of the per-redemption figures).
func redisInfo(ctx context.Context, c *redis.Client) (redisCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	text, err := c.Info(ctx, "replication", "commandstats", "memory", "keyspace", "stats").Result()
	if err != nil {
		return redisCounts{}, err
	}
	return parseRedisInfo(text)
}

func parseRedisInfo(text string) (redisCounts, error) {
	r := redisCounts{calls: map[string]int64{}}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		var err error
		switch {
		case name == "role":
			r.master = value == "master"
		case name == "used_memory":
			r.usedMemory, err = strconv.ParseInt(value, 10, 64)
		case name == "used_memory_dataset":
			r.datasetMem, err = strconv.ParseInt(value, 10, 64)
		case name == "total_reads_processed":
			r.readsEvents, err = strconv.ParseInt(value, 10, 64)
		case strings.HasPrefix(name, "db"):
			// db0:keys=12,expires=12,avg_ttl=0
			for _, kv := range strings.Split(value, ",") {
				if n, ok := strings.CutPrefix(kv, "keys="); ok {
					var k int64
					if k, err = strconv.ParseInt(n, 10, 64); err == nil {
						r.keys += k
					}
				}
			}
		case strings.HasPrefix(name, "cmdstat_"):
			// cmdstat_set:calls=3,usec=..., or cmdstat_cluster|slots:...
			for _, kv := range strings.Split(value, ",") {
				if n, ok := strings.CutPrefix(kv, "calls="); ok {
					var k int64
					if k, err = strconv.ParseInt(n, 10, 64); err == nil {
						r.calls[strings.TrimPrefix(name, "cmdstat_")] = k
					}
				}
			}
		}
		if err != nil {
			return r, fmt.Errorf("redis INFO %s: %w", name, err)
		}
	}
	return r, nil
}

// redisNotPerRedemption are commands that are not the issuers' work:
// loadgen's own INFO, and replication's acknowledgements.
var redisNotPerRedemption = map[string]bool{"info": true, "replconf": true, "psync": true, "sync": true}

// perRedemption divides each counter's growth by ok, leaving out names in
// skip and counters that did not grow. The total is over what is kept.
func perRedemption(before, after map[string]int64, ok int, skip map[string]bool) (map[string]float64, float64) {
	out := map[string]float64{}
	total := 0.0
	if ok == 0 {
		return out, 0
	}
	for name, a := range after {
		d := a - before[name]
		if d <= 0 || skip[name] {
			continue
		}
		out[name] = float64(d) / float64(ok)
		total += out[name]
	}
	return out, total
}

// sumCalls adds the command calls of the nodes that were masters when
// read (replicas count the commands replication applies, which no client
// sent).
func sumCalls(nodes []redisCounts) map[string]int64 {
	out := map[string]int64{}
	for _, n := range nodes {
		if !n.master {
			continue
		}
		for k, v := range n.calls {
			out[k] += v
		}
	}
	return out
}

// sumReads adds the read events of the nodes that were masters.
func sumReads(nodes []redisCounts) int64 {
	var n int64
	for _, r := range nodes {
		if r.master {
			n += r.readsEvents
		}
	}
	return n
}

// etcdRequests reads an etcd member's /metrics: requests served per gRPC
// method (unary calls, by grpc_server_handled_total) and messages received
// on streams (Watch, LeaseKeepAlive: grpc_server_msg_received_total), as
// "Method" and "Method (stream msgs)".
func etcdRequests(ctx context.Context, client *http.Client, addr string) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("etcd %s /metrics: %s", addr, resp.Status)
	}
	return parseEtcdMetrics(io.LimitReader(resp.Body, 16<<20))
}

func parseEtcdMetrics(r io.Reader) (map[string]int64, error) {
	out := map[string]int64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var stream bool
		switch {
		case strings.HasPrefix(line, "grpc_server_handled_total{"):
		case strings.HasPrefix(line, "grpc_server_msg_received_total{"):
			stream = true
		default:
			continue
		}
		open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
		if end < open {
			return nil, fmt.Errorf("etcd metrics: malformed line %q", line)
		}
		labels := parseLabels(line[open+1 : end])
		unary := labels["grpc_type"] == "unary"
		if stream == unary {
			// Unary calls are counted once handled; streams by message.
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			return nil, fmt.Errorf("etcd metrics: %q: %w", line, err)
		}
		name := labels["grpc_method"]
		if stream {
			name += " (stream msgs)"
		}
		out[name] += int64(v)
	}
	return out, sc.Err()
}

// parseLabels reads name="value",... (values here hold no quotes or
// commas).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			out[strings.TrimSpace(k)] = strings.Trim(v, `"`)
		}
	}
	return out
}

func sumMaps(ms []map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, m := range ms {
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

// breakdown formats "name 1.00, other 0.02" largest first, leaving out
// names below 0.005 per redemption.
func breakdown(m map[string]float64) string {
	names := make([]string, 0, len(m))
	for k, v := range m {
		if v >= 0.005 {
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %.2f", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
