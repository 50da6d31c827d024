package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/testcluster"
)

// startIssuer runs bin with args until the test ends (or stop is called),
// waits until url answers /healthz, and returns stop: SIGTERM, then
// SIGKILL after stopTimeout. A failure to start shows its output.
func startIssuer(t *testing.T, bin, url string, args ...string) (stop func()) {
	t.Helper()
	s := &server{name: filepath.Base(bin), dir: t.TempDir()}
	f, err := os.Create(s.logPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	t.Cleanup(stop)
	s.exited = exited
	if err := s.waitFor(context.Background(), "answering /healthz", func() error { return issuerHealth(url) }); err != nil {
		t.Fatal(err)
	}
	return stop
}

// issuer migrate as an operator runs it: a bbolt issuer a verifier synced
// from is stopped and migrated into a cluster's etcd; a replica started on
// the migrated prefix serves a bundle the verifier, pinned to the old
// fingerprint and holding the old bundle, accepts (same pin, no rollback).
func TestMigrateThenServeAsReplica(t *testing.T) {
	_, issuerBin, verifierBin := binaries(t)
	work := t.TempDir()
	data, kekFile := filepath.Join(work, "data"), filepath.Join(work, "data.kek")
	bundleFile, verifierCfg := filepath.Join(work, "bundle.jws"), filepath.Join(work, "verifier.json")
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	oldURL, replicaURL := "http://"+addr(ports[0]), "http://"+addr(ports[1])

	stop := startIssuer(t, issuerBin, oldURL, "serve", "--data", data, "--kek", kekFile,
		"--addr", addr(ports[0]), "--metrics-addr", "off")
	fp, err := os.ReadFile(filepath.Join(data, "bundle-key.fingerprint"))
	if err != nil {
		t.Fatal(err)
	}
	pin := strings.TrimSpace(string(fp))
	if r := runCmd(t, verifierBin, "sync", oldURL, "--pin", pin, "--bundle", bundleFile, "--config", verifierCfg); r.err != nil {
		t.Fatalf("verifier sync from the bbolt issuer: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	stop()

	ec := testcluster.StartEtcd(t)
	rc := testcluster.StartRedis(t)
	endpoints := strings.Join(ec.Endpoints(), ",")
	const prefix = "/migrated/"
	r := runCmd(t, issuerBin, "migrate", "--data", data, "--kek", kekFile, "--etcd", endpoints, "--prefix", prefix)
	if r.err != nil || !strings.Contains(r.stdout, "fingerprint "+pin) {
		t.Fatalf("issuer migrate: %v\n%s%s", r.err, r.stdout, r.stderr)
	}

	startIssuer(t, issuerBin, replicaURL, "serve", "--etcd", endpoints, "--redis", strings.Join(rc.Addrs(), ","),
		"--prefix", prefix, "--kek", kekFile, "--data", filepath.Join(work, "replica"),
		"--addr", addr(ports[1]), "--metrics-addr", "off", "--replica-id", "migrated-0")
	held, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	// The pin is the one sync remembered in the verifier's configuration.
	r = runCmd(t, verifierBin, "sync", replicaURL, "--bundle", bundleFile, "--config", verifierCfg)
	if r.err != nil {
		t.Fatalf("verifier sync from the replica on the migrated state, pinned to %s: %v\n%s%s", pin, r.err, r.stdout, r.stderr)
	}
	now, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(now) == string(held) {
		t.Fatalf("the verifier still holds the bbolt issuer's bundle after syncing from the replica")
	}
}
