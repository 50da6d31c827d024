package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of three masters with one replica each,
// configured as an operator should for durability and deletion (issue
// 13): AOF with appendfsync always on every node, no timed RDB snapshots.
type RedisCluster struct {
	Nodes []*Node
}

// StartRedis starts a 3+3 Redis Cluster and waits until every node says
// cluster_state:ok and every replica's link to its master is up. It fails
// the test if that takes longer than ReadyTimeout; t.Cleanup stops it.
func StartRedis(t testing.TB) *RedisCluster {
	t.Helper()
	rc, err := launchRedis(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.stopAll(t) })
	return rc
}

// LaunchRedis is StartRedis outside a test (loadgen cluster, make
// cluster): the nodes' directories go under base, and the caller stops the
// cluster with Stop.
func LaunchRedis(base string) (*RedisCluster, error) {
	return launchRedis(base, func(string, ...any) {})
}

func launchRedis(base string, logf func(string, ...any)) (*RedisCluster, error) {
	server, err := binary("redis-server", "redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := binary("redis-cli", "redis-tools")
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < startAttempts; attempt++ {
		rc := &RedisCluster{}
		if err = rc.start(base, server, cli); err == nil {
			return rc, nil
		}
		if serr := rc.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		if !errors.Is(err, errExited) {
			break
		}
		logf("testcluster: Redis start-up attempt %d: %v", attempt+1, err)
	}
	return nil, err
}

func (rc *RedisCluster) start(base, server, cli string) error {
	ports, err := freePorts(12)
	if err != nil {
		return err
	}
	if base, err = os.MkdirTemp(base, "redis-"); err != nil {
		return err
	}
	for i := 0; i < 6; i++ {
		port, bus := ports[2*i], ports[2*i+1]
		dir, err := mkdir(base, fmt.Sprintf("redis-%d", i))
		if err != nil {
			return err
		}
		n := &Node{
			Name: fmt.Sprintf("redis-%d", i),
			Addr: addr(port),
			Dir:  dir,
			bin:  server,
			args: []string{
				"--port", strconv.Itoa(port),
				"--cluster-port", strconv.Itoa(bus),
				"--bind", "127.0.0.1",
				"--protected-mode", "no",
				"--daemonize", "no",
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000",
				"--appendonly", "yes",
				"--appendfsync", "always",
				"--repl-diskless-sync-delay", "0",
				// No RDB snapshots on a timer: AOF is the persistence
				// (every write fsynced before it is answered), and a
				// snapshot taken between two sweeps is one more copy of
				// records due before the next. An RDB file still appears
				// (a replica keeps the one of a full resynchronisation):
				// redisstore's Sweep replaces it on every node with a
				// fresh snapshot after its AOF rewrite.
				"--save", "",
				"--dir", ".",
			},
		}
		rc.Nodes = append(rc.Nodes, n)
	}
	for _, n := range rc.Nodes {
		if err := n.start(); err != nil {
			return err
		}
	}
	for _, n := range rc.Nodes {
		if err := n.waitFor("answering PING", func() error { return RedisPing(n.Addr) }); err != nil {
			return err
		}
	}
	args := []string{"--cluster", "create"}
	args = append(args, rc.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("testcluster: redis-cli --cluster create: %v\n%s", err, tail(string(out)))
	}
	if err := rc.WaitHealthy(); err != nil {
		return err
	}
	return nil
}

// Addrs are the host:port of every node, for redis.ClusterOptions.Addrs.
func (rc *RedisCluster) Addrs() []string {
	out := make([]string, len(rc.Nodes))
	for i, n := range rc.Nodes {
		out[i] = n.Addr
	}
	return out
}

// WaitHealthy waits until every running node reports cluster_state:ok with
// all 16384 slots served, and every running replica's master link is up.
func (rc *RedisCluster) WaitHealthy() error {
	for _, n := range rc.Nodes {
		if !n.Running() {
			continue
		}
		if err := n.waitFor("in a healthy cluster", func() error { return RedisHealthy(n.Addr) }); err != nil {
			return err
		}
	}
	return nil
}

// Masters are the running nodes that are masters now (after a failover,
// a former replica).
func (rc *RedisCluster) Masters() ([]*Node, error) {
	var out []*Node
	for _, n := range rc.Nodes {
		if !n.Running() {
			continue
		}
		role, err := info(n.Addr, "replication")
		if err != nil {
			return nil, err
		}
		if field(role, "role") == "master" {
			out = append(out, n)
		}
	}
	return out, nil
}

// Restart starts a stopped or killed node again with its data and waits
// until it answers PING (it rejoins the cluster by itself from nodes.conf;
// call WaitHealthy to wait for that).
func (rc *RedisCluster) Restart(n *Node) error {
	if err := n.start(); err != nil {
		return err
	}
	return n.waitFor("answering PING", func() error { return RedisPing(n.Addr) })
}

func (rc *RedisCluster) stopAll(t testing.TB) {
	if err := rc.Stop(); err != nil {
		t.Error(err)
	}
}

func client(a string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: a, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		MaxRetries: -1, PoolSize: 1})
}

// RedisPing asks the Redis server at a (HOST:PORT) for PONG.
func RedisPing(a string) error {
	c := client(a)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

func info(a, section string) (string, error) {
	c := client(a)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Info(ctx, section).Result()
}

// RedisHealthy says whether the Redis Cluster node at a (HOST:PORT)
// serves: the cluster's state is ok with every slot covered and, on a
// replica, its link to its master is up. cmd/devcluster polls it too.
func RedisHealthy(a string) error {
	c := client(a)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ci, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if s := field(ci, "cluster_state"); s != "ok" {
		return fmt.Errorf("cluster_state:%s", s)
	}
	if s := field(ci, "cluster_slots_ok"); s != "16384" {
		return fmt.Errorf("cluster_slots_ok:%s", s)
	}
	role, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if field(role, "role") == "slave" {
		if s := field(role, "master_link_status"); s != "up" {
			return fmt.Errorf("master_link_status:%s", s)
		}
	}
	return nil
}

// field reads "name:value" from an INFO or CLUSTER INFO answer.
func field(text, name string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// Stop stops every node (SIGTERM, then SIGKILL after StopTimeout). The
// test's cleanup does the same; calling both is harmless.
func (rc *RedisCluster) Stop() error {
	var errs []error
	for _, n := range rc.Nodes {
		if err := n.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
