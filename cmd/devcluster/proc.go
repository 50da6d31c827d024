package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// stopTimeout is how long a server has after SIGTERM before SIGKILL (a
	// Redis replica sent SIGTERM during its first AOF rewrite was seen to
	// ignore it for minutes).
	stopTimeout = 10 * time.Second
	// readyTimeout bounds each wait for a server or the Redis Cluster: a
	// healthy start takes 0.25 s (etcd) to 2.5 s (Redis Cluster), but the
	// machine may be busy.
	readyTimeout = 90 * time.Second
	pollInterval = 50 * time.Millisecond
	pidFile      = "pid"
	logFile      = "server.log"
)

// server is one process of the cluster: its name is also its directory
// under the cluster's data directory, where its pid file and log are.
type server struct {
	name string
	addr string // host:port polled for readiness
	dir  string // absolute
	bin  string
	args []string

	pid    int
	exited chan struct{} // closed when the process started by this run ends
}

func (s *server) pidPath() string { return filepath.Join(s.dir, pidFile) }
func (s *server) logPath() string { return filepath.Join(s.dir, logFile) }

// start launches the server detached: in a session of its own, so it
// outlives this command and the terminal's signals (Ctrl-C in the shell
// that ran make), with its output appended to its log. The pid file is
// written before start returns, so cluster-down finds it even if this
// command dies the next moment.
func (s *server) start() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "--- devcluster: %s started %s\n", s.name, time.Now().UTC().Format(time.RFC3339))
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.pid = cmd.Process.Pid
	s.exited = make(chan struct{})
	go func() {
		// Reaps it if it dies while we wait for it; once this command
		// exits, the servers are adopted by init.
		_ = cmd.Wait()
		close(s.exited)
	}()
	return os.WriteFile(s.pidPath(), []byte(strconv.Itoa(s.pid)+"\n"), 0o600)
}

// waitFor polls ready until it returns nil, the process exits, ctx ends
// (Ctrl-C) or readyTimeout passes; the error names the server and ends
// with its log's tail.
func (s *server) waitFor(ctx context.Context, what string, ready func() error) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited while waiting for it to be %s (%v); the end of %s:\n%s", s.name, what, last, s.logPath(), s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for %s to be %s", s.name, what)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %s after %s (%v); the end of %s:\n%s", s.name, what, readyTimeout, last, s.logPath(), s.logTail())
		}
		time.Sleep(pollInterval)
	}
}

func (s *server) logTail() string {
	const max = 3000
	f, err := os.Open(s.logPath())
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// running reads the server's pid file and returns the pid if that process
// is alive and is this server (its working directory is the server's
// directory; Redis rewrites its command line, so that is not compared),
// so a pid reused by another program is never signalled.
func (s *server) running() int {
	b, err := os.ReadFile(s.pidPath())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !alive(pid) {
		return 0
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && cwd != s.dir {
		return 0
	}
	return pid
}

// alive says whether pid is a live process (a zombie is not: nobody may
// have reaped it yet, but it holds no port and no file).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// "pid (comm) S ...": the state follows the last ')'.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	return true
}

// groupAlive says whether any live process is left in the process group
// pgid (a server and, for Redis, an AOF-rewrite child).
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	// kill(-pgid, 0) also succeeds for zombies: look for a live member.
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pg, err := syscall.Getpgid(pid); err == nil && pg == pgid && alive(pid) {
			return true
		}
	}
	return false
}

// stopGroups sends SIGTERM to every process group (each server leads its
// own session), and SIGKILL to those still alive after stopTimeout; it
// returns the groups still alive after that (none, unless the kernel
// could not kill them).
func stopGroups(pgids []int) []int {
	signal := func(sig syscall.Signal, gs []int) {
		for _, g := range gs {
			_ = syscall.Kill(-g, sig)
		}
	}
	waitGone := func(gs []int, wait time.Duration) []int {
		deadline := time.Now().Add(wait)
		for {
			var left []int
			for _, g := range gs {
				if groupAlive(g) {
					left = append(left, g)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				return left
			}
			time.Sleep(pollInterval)
		}
	}
	signal(syscall.SIGTERM, pgids)
	left := waitGone(pgids, stopTimeout)
	if len(left) == 0 {
		return nil
	}
	signal(syscall.SIGKILL, left)
	return waitGone(left, stopTimeout)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1, all held open
// until every one is chosen. A port another program takes before its
// server binds it shows up as that server exiting, with its log.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		if p := l.Addr().(*net.TCPAddr).Port; p <= 55000 {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// checkFree fails naming the port and who needs it if it is taken.
func checkFree(port int, who string) error {
	l, err := net.Listen("tcp", addr(port))
	if err != nil {
		return fmt.Errorf("port %d (%s) is taken: %v", port, who, err)
	}
	return l.Close()
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
