package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EtcdSnapshotCount is the members' --snapshot-count: the number of entries
// after which a member takes a snapshot, which releases the WAL segments
// before it to the purge loop. etcd 3.4's default (100,000) would keep a
// deleted value on disk until that many more writes; the issuer's scrub
// (etcdstore.Scrub) writes this many small entries to force a snapshot past
// what it deleted, so the two must agree.
const EtcdSnapshotCount = 1000

// EtcdCluster is a 3-member etcd cluster, started with the settings real
// deletion needs (docs/operating.md, "etcd settings for real deletion").
type EtcdCluster struct {
	Members []*Node // Addr is each member's client address
}

// StartEtcd starts three etcd members and waits until each reports itself
// healthy (a leader is elected and it answers), failing the test after
// ReadyTimeout; t.Cleanup stops them.
func StartEtcd(t testing.TB) *EtcdCluster {
	t.Helper()
	ec, err := launchEtcd(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.stopAll(t) })
	return ec
}

// LaunchEtcd is StartEtcd outside a test (loadgen cluster, make cluster):
// the members' directories go under base, and the caller stops the cluster
// with Stop.
func LaunchEtcd(base string) (*EtcdCluster, error) {
	return launchEtcd(base, func(string, ...any) {})
}

func launchEtcd(base string, logf func(string, ...any)) (*EtcdCluster, error) {
	bin, err := binary("etcd", "etcd-server")
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < startAttempts; attempt++ {
		ec := &EtcdCluster{}
		if err = ec.start(base, bin); err == nil {
			return ec, nil
		}
		if serr := ec.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		if !errors.Is(err, errExited) {
			break
		}
		logf("testcluster: etcd start-up attempt %d: %v", attempt+1, err)
	}
	return nil, err
}

func (ec *EtcdCluster) start(base, bin string) error {
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	if base, err = os.MkdirTemp(base, "etcd-"); err != nil {
		return err
	}
	var initial []string
	for i := 0; i < 3; i++ {
		initial = append(initial, fmt.Sprintf("etcd-%d=http://%s", i, addr(ports[2*i+1])))
	}
	for i := 0; i < 3; i++ {
		client, peer := "http://"+addr(ports[2*i]), "http://"+addr(ports[2*i+1])
		name := fmt.Sprintf("etcd-%d", i)
		dir, err := mkdir(base, name)
		if err != nil {
			return err
		}
		ec.Members = append(ec.Members, &Node{
			Name: name,
			Addr: addr(ports[2*i]),
			Dir:  dir,
			bin:  bin,
			args: []string{
				"--name", name,
				"--data-dir", "data",
				"--listen-client-urls", client,
				"--advertise-client-urls", client,
				"--listen-peer-urls", peer,
				"--initial-advertise-peer-urls", peer,
				"--initial-cluster", strings.Join(initial, ","),
				"--initial-cluster-state", "new",
				"--initial-cluster-token", "testcluster",
				"--snapshot-count", strconv.Itoa(EtcdSnapshotCount),
				// One WAL segment is kept besides those still needed, so a
				// segment holding deleted values goes at the next purge
				// (every 30 s) once a snapshot is past it.
				"--max-wals", "1",
				"--logger", "zap",
				"--log-outputs", "stderr",
			},
		})
	}
	for _, m := range ec.Members {
		if err := m.start(); err != nil {
			return err
		}
	}
	if err := ec.WaitHealthy(); err != nil {
		return err
	}
	return nil
}

// Endpoints are the members' client addresses, for clientv3.Config.
func (ec *EtcdCluster) Endpoints() []string {
	out := make([]string, len(ec.Members))
	for i, m := range ec.Members {
		out[i] = "http://" + m.Addr
	}
	return out
}

// WaitHealthy waits until every running member answers /health with
// health true (it sees a leader).
func (ec *EtcdCluster) WaitHealthy() error {
	for _, m := range ec.Members {
		if !m.Running() {
			continue
		}
		if err := m.waitFor("healthy", func() error { return EtcdHealthy(m.Addr) }); err != nil {
			return err
		}
	}
	return nil
}

// Restart starts a stopped or killed member again on its data directory
// and waits until it is healthy.
func (ec *EtcdCluster) Restart(m *Node) error {
	if err := m.start(); err != nil {
		return err
	}
	return m.waitFor("healthy", func() error { return EtcdHealthy(m.Addr) })
}

func (ec *EtcdCluster) stopAll(t testing.TB) {
	if err := ec.Stop(); err != nil {
		t.Error(err)
	}
}

// healthClient has a transport of its own: a test package may wrap
// http.DefaultTransport (openapicheck holds it to the issuer's API).
var healthClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}

// EtcdHealthy asks the etcd member at client address a (HOST:PORT)
// whether it is healthy: it has a leader and answers. cmd/devcluster polls
// it too.
func EtcdHealthy(a string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("health answer %q: %w", body, err)
	}
	if h.Health != "true" {
		return fmt.Errorf("health answer %s", body)
	}
	return nil
}

// Stop stops every member (SIGTERM, then SIGKILL after StopTimeout).
func (ec *EtcdCluster) Stop() error {
	var errs []error
	for _, m := range ec.Members {
		if err := m.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
