package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/healthcode/healthcode/issuer"
)

// One issuer per data directory for the life of the store: a second Open
// fails at once with a message naming the directory, also while sweeps
// compact (and so close and reopen) the main file, and the lock goes only
// with Close.
func TestOpenRefusesASecondIssuerEvenDuringCompaction(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	want := fmt.Sprintf("boltstore: data directory %s is in use: another issuer holds it (lock file %s)", dir, filepath.Join(dir, "lock"))

	var compactions atomic.Int64
	testHook = func(stage string) {
		if stage == "compact-written" {
			compactions.Add(1)
		}
	}
	t.Cleanup(func() { testHook = nil })
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Something due at once, so every sweep compacts.
			if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "x"}, t0); err != nil {
				done <- err
				return
			}
			if _, err := s.Sweep(ctx, t0); err != nil {
				done <- err
				return
			}
		}
	}()
	attempts := 0
	for compactions.Load() < 20 {
		// The lock's own message, not bbolt's open timeout: the refusal
		// comes from the data directory's lock file, before any bbolt
		// file is opened. (A wall-clock bound here failed on a loaded
		// machine; the message tells the two paths apart.)
		_, err := Open(dir, Options{Clock: clock, KEK: testKEK})
		if err == nil || err.Error() != want {
			close(stop)
			t.Fatalf("second Open during compaction %d: %v, want %q", compactions.Load(), err, want)
		}
		attempts++
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d second Opens refused across %d compactions", attempts, compactions.Load())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, Options{Clock: clock, KEK: testKEK})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}
