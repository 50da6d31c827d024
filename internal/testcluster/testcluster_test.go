package testcluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// gone says whether no process with this pid exists any more.
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func pids(t *testing.T, nodes []*Node) []int {
	t.Helper()
	var out []int
	for _, n := range nodes {
		p := n.PID()
		if p == 0 || gone(p) {
			t.Fatalf("%s: not running (pid %d)", n.Name, p)
		}
		out = append(out, p)
	}
	return out
}

// poll retries f until it succeeds or the bound passes.
func poll(t *testing.T, what string, bound time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s: %v", what, bound, err)
		}
		time.Sleep(pollInterval)
	}
}

func TestRedisClusterStartsServesFailsOverAndStops(t *testing.T) {
	rc := StartRedis(t)
	ps := pids(t, rc.Nodes)
	masters, err := rc.Masters()
	if err != nil {
		t.Fatal(err)
	}
	if len(masters) != 3 {
		t.Fatalf("masters: got %d, want 3", len(masters))
	}
	ctx := context.Background()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRedirects: 8})
	defer cc.Close()
	// Keys on every master: a cluster-aware client can write and read all.
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("k%d", i)
		if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("k%d", i)
		if v, err := cc.Get(ctx, k).Int(); err != nil || v != i {
			t.Fatalf("get %s: %d, %v", k, v, err)
		}
	}

	// Kill the master of k0: its replica takes over, the data stays.
	victimAddr := ""
	m, err := cc.MasterForKey(ctx, "k0")
	if err != nil {
		t.Fatal(err)
	}
	victimAddr = m.Options().Addr
	// Replication is asynchronous: a master killed before it sent k0 on
	// loses it in the failover. SET and WAIT on one connection of k0's own
	// master make sure a replica has it first.
	var waited *redis.Cmd
	if _, err := m.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "k0", 0, 0)
		waited = p.Do(ctx, "WAIT", 1, 10000)
		return nil
	}); err != nil {
		t.Fatalf("set k0 and wait for a replica: %v", err)
	}
	if n, err := waited.Int(); err != nil || n < 1 {
		t.Fatalf("WAIT 1: %d replicas acknowledged, %v", n, err)
	}
	var victim *Node
	for _, n := range rc.Nodes {
		if n.Addr == victimAddr {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("no node has address %s", victimAddr)
	}
	vpid := victim.PID()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if !gone(vpid) || victim.Running() {
		t.Fatalf("killed %s (pid %d) is still there", victim.Name, vpid)
	}
	took := poll(t, "failover", ReadyTimeout, func() error {
		ms, err := rc.Masters()
		if err != nil {
			return err
		}
		if len(ms) != 3 {
			return fmt.Errorf("%d masters", len(ms))
		}
		cc.ReloadState(ctx)
		return cc.Get(ctx, "k0").Err()
	})
	t.Logf("k0 readable %s after its master was killed", took)
	if v, err := cc.Get(ctx, "k0").Int(); err != nil || v != 0 {
		t.Fatalf("k0 after failover: %d, %v", v, err)
	}

	// The killed node comes back (as a replica) and the cluster is whole.
	if err := rc.Restart(victim); err != nil {
		t.Fatal(err)
	}
	if err := rc.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	ps[indexOf(rc.Nodes, victim)] = victim.PID()

	if err := rc.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if !gone(p) {
			t.Errorf("%s: pid %d still exists after Stop", rc.Nodes[i].Name, p)
		}
	}
}

func indexOf(ns []*Node, n *Node) int {
	for i, x := range ns {
		if x == n {
			return i
		}
	}
	return -1
}

// etcdPut writes through etcd's JSON gateway (/v3/kv/put), so this
// package's test needs no etcd client.
func etcdPut(a, key, value string) error {
	body, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString([]byte(value)),
	})
	resp, err := healthClient.Post("http://"+a+"/v3/kv/put", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("put: %s", resp.Status)
	}
	return nil
}

func etcdGet(a, key string) (string, error) {
	body, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	resp, err := healthClient.Post("http://"+a+"/v3/kv/range", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct {
		Kvs []struct {
			Value string `json:"value"`
		} `json:"kvs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	if len(r.Kvs) != 1 {
		return "", fmt.Errorf("range %s: %d values", key, len(r.Kvs))
	}
	v, err := base64.StdEncoding.DecodeString(r.Kvs[0].Value)
	return string(v), err
}

func TestEtcdClusterStartsSurvivesAMemberAndStops(t *testing.T) {
	ec := StartEtcd(t)
	ps := pids(t, ec.Members)
	if err := etcdPut(ec.Members[0].Addr, "greeting", "hello"); err != nil {
		t.Fatal(err)
	}
	for _, m := range ec.Members {
		poll(t, "read on "+m.Name, 30*time.Second, func() error {
			v, err := etcdGet(m.Addr, "greeting")
			if err == nil && v != "hello" {
				return fmt.Errorf("got %q", v)
			}
			return err
		})
	}
	// One member killed: the other two still have a quorum and take writes.
	if err := ec.Members[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if !gone(ps[0]) {
		t.Fatalf("killed member pid %d still exists", ps[0])
	}
	took := poll(t, "write without member 0", ReadyTimeout, func() error {
		return etcdPut(ec.Members[1].Addr, "after", "kill")
	})
	t.Logf("write accepted %s after a member was killed", took)
	if err := ec.Restart(ec.Members[0]); err != nil {
		t.Fatal(err)
	}
	poll(t, "restarted member catches up", ReadyTimeout, func() error {
		v, err := etcdGet(ec.Members[0].Addr, "after")
		if err == nil && v != "kill" {
			return fmt.Errorf("got %q", v)
		}
		return err
	})
	ps[0] = ec.Members[0].PID()
	if err := ec.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if !gone(p) {
			t.Errorf("%s: pid %d still exists after Stop", ec.Members[i].Name, p)
		}
	}
}

// TestStopKillsWhatIgnoresSIGTERM: a server that ignores SIGTERM (as a
// Redis replica in its first AOF rewrite was seen to) is SIGKILLed after
// the stop timeout, with the rest of its process group.
func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	n := &Node{Name: "stubborn", Dir: t.TempDir(), bin: "/bin/sh",
		args:        []string{"-c", `trap "" TERM; echo ready; while :; do sleep 1; done`},
		stopTimeout: 300 * time.Millisecond}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Kill() })
	if err := n.waitFor("ready", func() error {
		if n.Output() != "ready\n" {
			return fmt.Errorf("output %q", n.Output())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pid := n.PID()
	if err := n.signalAndWait(syscall.SIGTERM, 300*time.Millisecond); !errors.Is(err, errStillRunning) {
		t.Fatalf("after SIGTERM alone: %v, want it still running", err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if !gone(pid) || n.Running() || n.PID() != 0 {
		t.Fatalf("pid %d survived Stop", pid)
	}
	// Its process group (the sleep child) went with it; the child may
	// linger as a zombie until its new parent reaps it.
	poll(t, "process group gone", 30*time.Second, func() error {
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("process group %d still has members: %v", pid, err)
		}
		return nil
	})
}

// TestWaitReportsAnExitedServer: a server that dies during start-up (a
// port taken between freePorts and its bind) ends the wait at once with
// errExited, which StartRedis and StartEtcd answer by trying other ports.
func TestWaitReportsAnExitedServer(t *testing.T) {
	n := &Node{Name: "short-lived", Dir: t.TempDir(), bin: "/bin/sh", args: []string{"-c", "echo bind: address in use; exit 1"}}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Kill() })
	start := time.Now()
	err := n.waitFor("ready", func() error { return errors.New("not yet") })
	if !errors.Is(err, errExited) {
		t.Fatalf("waitFor: %v, want errExited", err)
	}
	if took := time.Since(start); took >= ReadyTimeout {
		t.Fatalf("waitFor took %s: it waited for the timeout instead of the exit", took)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("bind: address in use")) {
		t.Fatalf("waitFor's error lacks the server's output: %v", err)
	}
}

// TestLaunchOutsideATest: LaunchEtcd, for callers with no testing.T
// (loadgen cluster, make cluster), puts the members' directories under the
// base it is given and leaves stopping to its caller.
func TestLaunchOutsideATest(t *testing.T) {
	base := t.TempDir()
	ec, err := LaunchEtcd(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Stop() })
	ps := pids(t, ec.Members)
	for _, m := range ec.Members {
		if !strings.HasPrefix(m.Dir, base+"/") {
			t.Errorf("%s: directory %s is not under %s", m.Name, m.Dir, base)
		}
	}
	if err := etcdPut(ec.Members[2].Addr, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := ec.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if !gone(p) {
			t.Errorf("%s: pid %d still exists after Stop", ec.Members[i].Name, p)
		}
	}
}
