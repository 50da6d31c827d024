// Package testcluster starts real Redis Cluster and etcd servers (Debian's
// redis-server and etcd binaries) on free 127.0.0.1 ports in a test's temp
// directory, for the adapters of DESIGN §8 and their fault tests. Every
// server is stopped by t.Cleanup: SIGTERM, then SIGKILL after a bounded
// wait (a Redis replica sent SIGTERM during its first AOF rewrite was seen
// to ignore it for minutes). Readiness is polled, never slept for.
package testcluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 10 * time.Second
	// ReadyTimeout bounds every wait for a server or a cluster to come up.
	// Generous: the CI machine has two cores shared with other work, and a
	// healthy start takes 0.25 s (etcd) to 2.5 s (Redis Cluster).
	ReadyTimeout = 90 * time.Second
	pollInterval = 20 * time.Millisecond
)

// Node is one server process. Its address, directory and arguments stay
// the same across Kill and Start, so a restarted node rejoins with its
// data (Redis nodes.conf and AOF, etcd's data directory).
type Node struct {
	Name string
	Addr string // host:port clients use
	Dir  string // its data directory

	bin         string
	args        []string
	stopTimeout time.Duration // 0: StopTimeout

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has been reaped
	logBuf *syncBuffer   // stdout and stderr of the current run
}

// start launches the process (it must not be running).
func (n *Node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("testcluster: %s is already running (pid %d)", n.Name, n.cmd.Process.Pid)
	}
	cmd := exec.Command(n.bin, n.args...)
	cmd.Dir = n.Dir
	buf := &syncBuffer{}
	cmd.Stdout = buf
	cmd.Stderr = buf
	// Pdeathsig: a test binary killed by its timeout takes its servers
	// with it instead of leaving them bound to ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testcluster: start %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done, n.logBuf = cmd, done, buf
	return nil
}

// StartServer starts one server for a test that needs one these clusters
// do not make (TLS only, auth on): bin with args, run in dir, stopped by
// t.Cleanup as a cluster's nodes are (SIGTERM, then SIGKILL after
// StopTimeout) and killed with the test binary if that dies first.
// Readiness is the caller's: WaitFor.
func StartServer(t testing.TB, name, dir, bin string, args ...string) *Node {
	t.Helper()
	n := &Node{Name: name, Dir: dir, bin: bin, args: args}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// WaitFor polls ready until it returns nil, failing the test, with the
// server's output, if the server exits first or ReadyTimeout passes.
func (n *Node) WaitFor(t testing.TB, what string, ready func() error) {
	t.Helper()
	if err := n.waitFor(what, ready); err != nil {
		t.Fatal(err)
	}
}

// PID is the process id of the running server, or 0 when it is stopped.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running says whether the process has been started and not yet reaped.
func (n *Node) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// exited is closed once the current run has ended (nil channel if none).
func (n *Node) exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done
}

// Output is what the current (or last) run wrote to stdout and stderr.
func (n *Node) Output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.logBuf == nil {
		return ""
	}
	return n.logBuf.String()
}

// Kill sends SIGKILL and waits until the process is gone: a crash for the
// fault tests.
func (n *Node) Kill() error { return n.signalAndWait(syscall.SIGKILL, StopTimeout) }

// Stop sends SIGTERM, and SIGKILL if the process is still there after
// StopTimeout; it returns once the process is gone.
func (n *Node) Stop() error {
	wait := n.stopTimeout
	if wait == 0 {
		wait = StopTimeout
	}
	err := n.signalAndWait(syscall.SIGTERM, wait)
	if errors.Is(err, errStillRunning) {
		err = n.signalAndWait(syscall.SIGKILL, StopTimeout)
	}
	return err
}

var errStillRunning = errors.New("still running")

// errExited is a server that stopped during start-up; most often a port
// taken by another process between freePorts and its bind, so start-up is
// tried again on other ports.
var errExited = errors.New("exited")

const startAttempts = 3

func (n *Node) signalAndWait(sig syscall.Signal, wait time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// Signal the process group: etcd and redis do not fork helpers that
	// must outlive them, and a Redis AOF rewrite child goes too.
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-done:
		n.mu.Lock()
		n.cmd = nil
		n.mu.Unlock()
		return nil
	case <-timer.C:
		return fmt.Errorf("testcluster: %s (pid %d) %w %s after %s", n.Name, cmd.Process.Pid, errStillRunning, sig, wait)
	}
}

// waitFor polls ready until it returns nil, the process exits, or
// ReadyTimeout passes.
func (n *Node) waitFor(what string, ready func() error) error {
	deadline := time.Now().Add(ReadyTimeout)
	exited := n.exited()
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testcluster: %s %w while waiting for %s: %v\n%s", n.Name, errExited, what, last, tail(n.Output()))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testcluster: %s not %s after %s: %v\n%s", n.Name, what, ReadyTimeout, last, tail(n.Output()))
		}
		time.Sleep(pollInterval)
	}
}

func tail(s string) string {
	const max = 4000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners
// are all held until every port is chosen, so the ports are distinct; a
// port taken by another process between Close and the server's bind shows
// up as that server exiting, which the caller reports.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testcluster: free port: %w", err)
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		// Redis's default bus port is port+10000; we set --cluster-port,
		// but keep clear of 65535 for both.
		if p > 55000 {
			continue
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// binary finds a server binary, or says how to install it.
func binary(name, pkg string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("testcluster: %s not found (install Debian's %s package): %w", name, pkg, err)
	}
	return p, nil
}

// mkdir makes a node's data directory.
func mkdir(base, name string) (string, error) {
	dir := base + "/" + name
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("testcluster: %w", err)
	}
	return dir, nil
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}
