package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/healthcode/healthcode/internal/keyfile"
)

// demoAttesterID and demoKeyFile match `issuer serve --demo`.
const (
	demoAttesterID = "demo-lab"
	demoKeyFile    = "demo-attester.key"
	welcomePrefix  = "Healthcode issuer on "
	pinPrefix      = "bundle key fingerprint (verifiers pin this): "
	startTimeout   = 30 * time.Second
	stopTimeout    = 15 * time.Second
)

// issuerProc is an issuer started by loadgen on a loopback port of its own
// choosing (--addr 127.0.0.1:0; the address is read from its first line).
type issuerProc struct {
	cmd     *exec.Cmd
	URL     string
	Dir     string
	LogPath string
	// Startup is the time from exec to the first 200 from /healthz.
	Startup time.Duration
	// Pin is the bundle key fingerprint its welcome names ("" if none
	// was seen by the time /healthz answered).
	Pin     string
	exited  chan struct{}
	waitErr error
}

// startIssuer runs `bin serve` on data directory dir with the demo attester
// and rate limits off (and any extra flags), and waits until /healthz
// answers.
func startIssuer(ctx context.Context, bin, dir, logPath string, extra ...string) (*issuerProc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"serve", "--data", dir, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--demo",
		"--redeem-rate", "0", "--admin-rate", "0", "--inventory-rate", "0",
		// Exact and fresh: the load run counts records through the inventory.
		"--inventory-rounding", "1", "--inventory-refresh", "1ns", "--log-level", "warn"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start issuer: %w", err)
	}
	p := &issuerProc{cmd: cmd, Dir: dir, LogPath: logPath, exited: make(chan struct{})}

	urlc, pinc := make(chan string, 1), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		found, pinned := false, false
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), welcomePrefix); ok && !found {
				found = true
				urlc <- strings.TrimSpace(u)
			}
			if fp, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), pinPrefix); ok && !pinned {
				pinned = true
				pinc <- strings.TrimSpace(fp)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case p.URL = <-urlc:
	case <-p.exited:
		return nil, fmt.Errorf("issuer exited before listening (%v); see %s", p.waitErr, logPath)
	case <-timer.C:
		p.Kill()
		return nil, fmt.Errorf("issuer did not start within %s; see %s", startTimeout, logPath)
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	}
	if _, err := checkTarget(p.URL); err != nil {
		p.Kill()
		return nil, fmt.Errorf("issuer announced %q: %w", p.URL, err)
	}
	if err := p.waitHealthy(ctx, timer.C); err != nil {
		p.Kill()
		return nil, err
	}
	p.Startup = time.Since(began)
	select {
	case p.Pin = <-pinc:
	default:
	}
	return p, nil
}

// waitHealthy polls /healthz, at most until the start timer fires, every
// 2ms so that the start-up time it gives is that close.
func (p *issuerProc) waitHealthy(ctx context.Context, expired <-chan time.Time) error {
	client := newClient(1, 2*time.Second)
	defer client.CloseIdleConnections()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/healthz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-p.exited:
			return fmt.Errorf("issuer exited during start (%v); see %s", p.waitErr, p.LogPath)
		case <-expired:
			return fmt.Errorf("issuer /healthz did not answer within %s; see %s", startTimeout, p.LogPath)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PID is the issuer's process id.
func (p *issuerProc) PID() int { return p.cmd.Process.Pid }

// DemoKey reads the demo attester key the issuer wrote into its directory.
func (p *issuerProc) DemoKey() (ed25519.PrivateKey, error) {
	return keyfile.Read(filepath.Join(p.Dir, demoKeyFile))
}

// Stop asks the issuer to shut down (SIGTERM) and kills it if it has not
// exited within stopTimeout. It reports a non-clean exit.
func (p *issuerProc) Stop() error {
	select {
	case <-p.exited:
		return fmt.Errorf("issuer had already exited (%v); see %s", p.waitErr, p.LogPath)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("issuer shutdown: %v; see %s", p.waitErr, p.LogPath)
		}
		return nil
	case <-timer.C:
		p.Kill()
		return fmt.Errorf("issuer did not stop within %s after SIGTERM; killed", stopTimeout)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *issuerProc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}
