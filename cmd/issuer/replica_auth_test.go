package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/internal/testcert"
	"github.com/healthcode/healthcode/internal/testcluster"
)

// freeAddr is a free 127.0.0.1 port, as HOST:PORT.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startEtcdTLSAuth starts a one-member etcd serving clients over TLS with
// the test certificate, with auth on and user root's password pw. It
// returns the client URL.
func startEtcdTLSAuth(t *testing.T, dir, certFile, keyFile, pw string) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd (Debian's etcd-server): %v", err)
	}
	client, peer := "https://"+freeAddr(t), "http://"+freeAddr(t)
	etcd := testcluster.StartServer(t, "etcd", dir, bin, "--name", "tls", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "tls="+peer,
		"--cert-file", certFile, "--key-file", keyFile, "--logger", "zap", "--log-outputs", "stderr")

	tlsCfg, err := clientTLS("etcd", certFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testcluster.ReadyTimeout)
	defer cancel()
	etcd.WaitFor(t, "answering over TLS", func() error {
		op, opCancel := context.WithTimeout(ctx, time.Second)
		defer opCancel()
		_, err := cli.Get(op, "ready")
		return err
	})
	if _, err := cli.RoleAdd(ctx, "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserAdd(ctx, "root", pw); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	return client
}

// A replica started with --etcd-ca but no client certificate, where etcd
// requires one (--client-cert-auth), is refused within --etcd-dial-timeout
// with a message that says etcd could not be reached, with the dial's
// error and what to check, not only a KEK check's context deadline after
// --etcd-timeout.
func TestReplicaEtcdClientCertMissing(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := testcert.SelfSigned(t, dir)
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd (Debian's etcd-server): %v", err)
	}
	client, peer := freeAddr(t), "http://"+freeAddr(t)
	etcd := testcluster.StartServer(t, "etcd", dir, bin, "--name", "tls", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "https://"+client, "--advertise-client-urls", "https://"+client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "tls="+peer,
		"--cert-file", certFile, "--key-file", keyFile, "--client-cert-auth", "--trusted-ca-file", certFile,
		"--logger", "zap", "--log-outputs", "stderr")
	etcd.WaitFor(t, "listening", func() error {
		c, err := net.DialTimeout("tcp", client, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	kekFile := filepath.Join(dir, "kek")
	if _, _, err := kek.LoadOrCreate(kekFile); err != nil {
		t.Fatal(err)
	}
	var stderr logBuffer
	code := run(context.Background(), []string{"serve", "--data", filepath.Join(dir, "data"), "--kek", kekFile, "--addr", "127.0.0.1:0", "--metrics-addr", "off",
		"--etcd", "https://" + client, "--etcd-ca", certFile, "--etcd-dial-timeout", "2s",
		"--redis", "127.0.0.1:1"}, strings.NewReader(""), io.Discard, &stderr)
	// The cause after the deadline: the server's alert (tls: bad
	// certificate) or the broken pipe it leaves, as the race goes.
	want := "issuer: etcd could not be reached at https://" + client + " within 2s: context deadline exceeded: "
	hint := " (no --etcd-cert given: etcd run with --client-cert-auth refuses a client without one)\n"
	if code != 1 || !strings.HasPrefix(stderr.String(), want) || !strings.HasSuffix(stderr.String(), hint) || len(stderr.String()) <= len(want)+len(hint) {
		t.Fatalf("exit %d, stderr %q; want 1, %q, the dial's error and %q", code, stderr.String(), want, hint)
	}
}

// requirePass turns on a password on every node of a Redis Cluster
// (masterauth first, so replicas keep replicating).
func requirePass(t *testing.T, rc *testcluster.RedisCluster, pw string) {
	t.Helper()
	ctx := context.Background()
	for _, setting := range []string{"masterauth", "requirepass"} {
		for _, n := range rc.Nodes {
			c := redis.NewClient(&redis.Options{Addr: n.Addr, Password: map[bool]string{true: pw}[setting == "masterauth"]})
			err := c.ConfigSet(ctx, setting, pw).Err()
			c.Close()
			if err != nil {
				t.Fatalf("%s on %s: %v", setting, n.Addr, err)
			}
		}
	}
}

// A replica reaches etcd over TLS (--etcd-ca) as an etcd user
// (--etcd-user, --etcd-password-file) and a Redis Cluster that wants a
// password (--redis-password-file), and redeems through them; a wrong
// password is refused at start, naming the part.
func TestReplicaTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := testcert.SelfSigned(t, dir)
	etcdURL := startEtcdTLSAuth(t, dir, certFile, keyFile, "etcd-secret")
	rc := testcluster.StartRedis(t)
	requirePass(t, rc, "redis-secret")

	kekFile := filepath.Join(dir, "kek")
	if _, _, err := kek.LoadOrCreate(kekFile); err != nil {
		t.Fatal(err)
	}
	secret := func(name, pw string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	etcdPW, redisPW, wrongPW := secret("etcd.pw", "etcd-secret"), secret("redis.pw", "redis-secret"), secret("wrong.pw", "wrong")
	args := func(etcdPass, redisPass string) []string {
		return []string{"serve", "--data", filepath.Join(dir, "data"), "--kek", kekFile, "--addr", "127.0.0.1:0", "--metrics-addr", "off",
			"--etcd", etcdURL, "--etcd-ca", certFile, "--etcd-user", "root", "--etcd-password-file", etcdPass,
			"--redis", strings.Join(rc.Addrs(), ","), "--redis-password-file", redisPass, "--redeem-rate", "0"}
	}

	for _, tc := range []struct {
		etcdPass, redisPass, want string
	}{
		{wrongPW, redisPW, "issuer: etcd " + etcdURL + ": "},
		{etcdPW, wrongPW, "issuer: redis " + strings.Join(rc.Addrs(), ",") + ": "},
	} {
		var stderr logBuffer
		code := run(context.Background(), args(tc.etcdPass, tc.redisPass), strings.NewReader(""), io.Discard, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Fatalf("etcd password %s, redis password %s: exit %d, stderr %s; want 1 and %q", tc.etcdPass, tc.redisPass, code, stderr.String(), tc.want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	out := &firstLine{ch: make(chan string, 1)}
	var log logBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append(args(etcdPW, redisPW), "--demo"), strings.NewReader(""), out, &log) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("replica exited %d:\n%s", code, log.String())
		}
	}()
	var base string
	select {
	case chunk := <-out.ch:
		line, _, _ := strings.Cut(chunk, "\n")
		base = strings.TrimPrefix(line, "Healthcode issuer on ")
	case code := <-done:
		done <- code
		t.Fatalf("replica exited %d before listening:\n%s", code, log.String())
	}
	var h struct {
		Status string            `json:"status"`
		Parts  map[string]string `json:"parts"`
	}
	if code := getJSON(t, base+"/healthz", &h); code != 200 || h.Status != "ok" || h.Parts["etcd"] != "ok" || h.Parts["redis"] != "ok" {
		t.Fatalf("/healthz: %d %+v", code, h)
	}
	key, err := keyfile.Read(filepath.Join(dir, "data", demoAttesterFile))
	if err != nil {
		t.Fatal(err)
	}
	if code := redeem(t, base, demoAttestation(t, key)); code != 200 {
		t.Fatalf("a redemption through TLS and auth: %d", code)
	}
	if strings.Contains(log.String(), "etcd-secret") || strings.Contains(log.String(), "redis-secret") {
		t.Fatalf("a password reached the log:\n%s", log.String())
	}
}

// startRedisTLS starts a one-node Redis Cluster (every slot on it) that
// takes clients over TLS only, with the test certificate, and returns its
// address.
func startRedisTLS(t *testing.T, dir, certFile, keyFile string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server (Debian's redis-server): %v", err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A lone node announces no IP unless told; the client would dial
	// ":PORT" and have no name to check the certificate against.
	node := testcluster.StartServer(t, "redis", rdir, bin, "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile, "--tls-auth-clients", "no",
		"--cluster-enabled", "yes", "--tls-cluster", "yes", "--cluster-config-file", "nodes.conf", "--cluster-announce-ip", "127.0.0.1",
		"--dir", rdir, "--save", "", "--appendonly", "no")
	tlsCfg, err := clientTLS("redis", certFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: tlsCfg})
	defer c.Close()
	ctx := context.Background()
	added := false
	node.WaitFor(t, "serving every slot over TLS", func() error {
		if !added {
			if err := c.ClusterAddSlotsRange(ctx, 0, 16383).Err(); err != nil {
				return err
			}
			added = true
		}
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errors.New("cluster_state is not ok")
		}
		return err
	})
	return addr
}

// A replica reaches a Redis Cluster that takes TLS only with --redis-ca,
// and redeems through it; without the CA the start is refused, naming
// Redis.
func TestReplicaRedisTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := testcert.SelfSigned(t, dir)
	ec := testcluster.StartEtcd(t)
	redisAddr := startRedisTLS(t, dir, certFile, keyFile)
	kekFile := filepath.Join(dir, "kek")
	if _, _, err := kek.LoadOrCreate(kekFile); err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "--data", filepath.Join(dir, "data"), "--kek", kekFile, "--addr", "127.0.0.1:0", "--metrics-addr", "off",
		"--etcd", strings.Join(ec.Endpoints(), ","), "--redis", redisAddr, "--redeem-rate", "0", "--redis-timeout", "1s", "--redis-wait-timeout", "500ms"}

	var stderr logBuffer
	if code := run(context.Background(), args, strings.NewReader(""), io.Discard, &stderr); code != 1 || !strings.HasPrefix(stderr.String(), "issuer: redis "+redisAddr+": ") {
		t.Fatalf("without --redis-ca: exit %d, stderr %s", code, stderr.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	out := &firstLine{ch: make(chan string, 1)}
	var log logBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(args, "--redis-ca", certFile, "--demo"), strings.NewReader(""), out, &log)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("replica exited %d:\n%s", code, log.String())
		}
	}()
	var base string
	select {
	case chunk := <-out.ch:
		line, _, _ := strings.Cut(chunk, "\n")
		base = strings.TrimPrefix(line, "Healthcode issuer on ")
	case code := <-done:
		done <- code
		t.Fatalf("replica exited %d before listening:\n%s", code, log.String())
	}
	key, err := keyfile.Read(filepath.Join(dir, "data", demoAttesterFile))
	if err != nil {
		t.Fatal(err)
	}
	att := demoAttestation(t, key)
	if code := redeem(t, base, att); code != 200 {
		t.Fatalf("a redemption through Redis over TLS: %d\n%s", code, log.String())
	}
	if code := redeem(t, base, att); code != 409 {
		t.Fatalf("the same attestation again: %d, want 409", code)
	}
}
