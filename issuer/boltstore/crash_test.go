package boltstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

// The crash tests re-run this test binary as a helper process that works on
// a store until it is killed with SIGKILL.
const (
	helperEnv     = "BOLTSTORE_CRASH_HELPER" // "redeem", "sweep" or "multi"
	helperDirEnv  = "BOLTSTORE_CRASH_DIR"
	helperStopEnv = "BOLTSTORE_CRASH_STOP_AT" // stage to stop at, or "" to run freely
)

var (
	crashDue  = t0.Add(time.Hour)
	crashLive = t0.Add(72 * time.Hour)
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "redeem":
		crashHelperRedeem(os.Getenv(helperDirEnv))
	case "sweep":
		crashHelperSweep(os.Getenv(helperDirEnv), os.Getenv(helperStopEnv))
	case "multi":
		crashHelperMulti(os.Getenv(helperDirEnv), os.Getenv(helperStopEnv))
	}
	os.Exit(3)
}

// ackWriter prints whole lines to stdout, one write each.
type ackWriter struct{ mu sync.Mutex }

func (w *ackWriter) line(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	os.Stdout.WriteString(fmt.Sprintf(format, args...) + "\n")
}

func helperOpen(dir string) *DB {
	s, err := Open(dir, Options{KEK: testKEK, Clock: &fakeClock{t: t0}, MaxBatchDelay: time.Millisecond, SweepChunk: testChunk})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper open:", err)
		os.Exit(4)
	}
	return s
}

// redeemForever redeems fresh attestations from several goroutines and
// acknowledges each one on stdout only after Redeem has returned.
func redeemForever(s *DB, w *ackWriter, prefix string) {
	ctx := context.Background()
	for g := range 16 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%s-%d-%d", prefix, g, i)
				if err := errOf(s.Redeem(ctx, redemption("lab", crashLive, id))); err != nil {
					fmt.Fprintln(os.Stderr, "helper redeem:", err)
					os.Exit(5)
				}
				w.line("ok %s", id)
			}
		}()
	}
}

func crashHelperRedeem(dir string) {
	s := helperOpen(dir)
	redeemForever(s, &ackWriter{}, "crash")
	select {} // until SIGKILL
}

func crashHelperSweep(dir, stopAt string) {
	s := helperOpen(dir)
	w := &ackWriter{}
	if stopAt != "" {
		testHook = func(stage string) {
			if stage == stopAt {
				w.line("at %s", stage)
				select {} // hold here until SIGKILL
			}
		}
	}
	redeemForever(s, w, "during-sweep")
	w.line("sweeping")
	if _, err := s.Sweep(context.Background(), time.Unix(s.epochOf(crashDue.Unix()), 0)); err != nil {
		fmt.Fprintln(os.Stderr, "helper sweep:", err)
		os.Exit(6)
	}
	w.line("swept")
	select {}
}

// multiRequest is request i of the multi-partition helper: two
// attestations whose records go to two partitions.
func multiRequest(i int) issuer.Redemption {
	r := redemption("lab", crashLive, fmt.Sprintf("multi-%d-a", i), fmt.Sprintf("multi-%d-b", i))
	r.Replay[1].Deadline = crashLive.Add(72 * time.Hour)
	return r
}

// crashHelperMulti redeems multiRequestCount two-partition requests, each
// acknowledged, then one more that it holds at stopAt until SIGKILL.
func crashHelperMulti(dir, stopAt string) {
	s := helperOpen(dir)
	w := &ackWriter{}
	ctx := context.Background()
	for i := range multiRequestCount {
		if _, err := s.Redeem(ctx, multiRequest(i)); err != nil {
			fmt.Fprintln(os.Stderr, "helper redeem:", err)
			os.Exit(5)
		}
		w.line("ok %d", i)
	}
	testHook = func(stage string) {
		if stage == stopAt {
			w.line("at %s", stage)
			select {}
		}
	}
	w.line("pending %d", multiRequestCount)
	s.Redeem(ctx, multiRequest(multiRequestCount))
	w.line("answered") // the stop was never reached: the test fails on this
	select {}
}

const multiRequestCount = 20

// runUntilKilled starts a helper, reads its lines until stop says so,
// kills it with SIGKILL and returns every complete line it printed.
func runUntilKilled(t *testing.T, env []string, stop func(line string) bool) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	var lines []string
	killed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			// EOF: a fragment without its newline was never acknowledged.
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		line = strings.TrimSuffix(line, "\n")
		lines = append(lines, line)
		if !killed && stop(line) {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited before it was killed: %v\nstderr: %s", err, stderr.String())
	}
	if st := cmd.ProcessState; st.Exited() {
		t.Fatalf("helper exited with %d instead of dying by SIGKILL\nstderr: %s", st.ExitCode(), stderr.String())
	}
	return lines
}

func acked(lines []string) []string {
	var ids []string
	for _, l := range lines {
		if id, ok := strings.CutPrefix(l, "ok "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

func TestCrashDuringRedeemKeepsAcknowledged(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	s.Close()
	n := 0
	lines := runUntilKilled(t, []string{helperEnv + "=redeem", helperDirEnv + "=" + dir}, func(line string) bool {
		if strings.HasPrefix(line, "ok ") {
			n++
		}
		return n == 400 // redemptions are still in flight when it dies
	})
	ids := acked(lines)
	if len(ids) < 400 {
		t.Fatalf("only %d acknowledged redemptions", len(ids))
	}
	s = openTest(t, dir, nil)
	ctx := context.Background()
	for _, id := range ids {
		var re *issuer.RedeemedError
		if err := errOf(s.Redeem(ctx, redemption("lab", crashLive, id))); !errors.As(err, &re) {
			t.Fatalf("acknowledged %s lost in the crash: Redeem again gave %v", id, err)
		}
	}
	checkConsistent(t, s)
	t.Logf("%d acknowledged redemptions, all still redeemed after SIGKILL", len(ids))
}

// crashSweepSetup writes a store with expired records (some redeemed with
// marker ids whose record keys it returns) and live ones.
func crashSweepSetup(t *testing.T, dir string) (markerKeys []pattern, liveIDs []string) {
	t.Helper()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	bulkReplay(t, s, 2*s.opts.SweepChunk+500, crashDue)
	for i := range 30 {
		id := fmt.Sprintf("CRASH-MARKER-%04d", i)
		if err := errOf(s.Redeem(ctx, redemption("lab", crashDue, id))); err != nil {
			t.Fatal(err)
		}
		markerKeys = append(markerKeys, pattern{"record key of " + id, recomputeReplayKey(t, dir, s.epoch, "lab", id, crashDue)})
	}
	for i := range 30 {
		id := fmt.Sprintf("live-%d", i)
		if err := errOf(s.Redeem(ctx, redemption("lab", crashLive, id))); err != nil {
			t.Fatal(err)
		}
		liveIDs = append(liveIDs, id)
	}
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "x", Detail: "CRASH-AUDIT-DETAIL"}, crashDue); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return markerKeys, liveIDs
}

func TestCrashDuringSweep(t *testing.T) {
	for _, stop := range []string{"", "partition-key-destroyed", "partition-dropped", "deleted-chunk", "before-compact", "compact-written"} {
		name := stop
		if name == "" {
			name = "anywhere"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			markers, live := crashSweepSetup(t, dir)
			sweeping, n := false, 0
			lines := runUntilKilled(t, []string{helperEnv + "=sweep", helperDirEnv + "=" + dir, helperStopEnv + "=" + stop},
				func(line string) bool {
					if stop == "" {
						// Some way into the sweep, wherever it has got to.
						if line == "sweeping" {
							sweeping = true
						}
						if sweeping && strings.HasPrefix(line, "ok ") {
							n++
						}
						return n == 20
					}
					return line == "at "+stop || line == "swept"
				})
			finished := slices.Contains(lines, "swept")
			if stop != "" && finished {
				t.Fatalf("the sweep never reached %q", stop)
			}
			compactFile := filepath.Join(dir, "healthcode.db.compact")
			_, statErr := os.Stat(compactFile)
			if stop == "compact-written" && statErr != nil {
				t.Fatalf("the kill was meant to leave a compaction copy behind: %v", statErr)
			}

			s := openTest(t, dir, nil)
			if _, err := os.Stat(compactFile); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("stale compaction copy survived Open: %v", err)
			}
			dueEnd := s.epochOf(crashDue.Unix())
			if stop == "partition-key-destroyed" {
				// The kill left the file of a partition whose key is gone.
				if _, err := os.Stat(s.partitionPath(dueEnd, ".db")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("partition file without its key survived Open: %v", err)
				}
			}
			ctx := context.Background()
			checkConsistent(t, s)
			now := time.Unix(dueEnd, 0)
			st, err := s.Sweep(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Compacted && !finished {
				t.Fatalf("recovery sweep did not compact (deleted %v): freed pages of the first sweep would stay", st.Deleted)
			}
			inv, err := s.Inventory(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range inv {
				if c.NextDeadline != nil && !c.NextDeadline.After(now) {
					t.Fatalf("%s still holds a record due %v", c.Name, c.NextDeadline)
				}
			}
			if h := hits(t, dir, append(markers, pattern{"audit detail", []byte("CRASH-AUDIT-DETAIL")})); len(h) != 0 {
				t.Fatalf("recoverable after crash and recovery sweep: %v", h)
			}
			for _, id := range append(live, acked(lines)...) {
				wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", crashLive, id))), 0)
			}
			t.Logf("stop %q (first sweep finished: %v): recovery sweep %+v; %d redemptions acknowledged during the sweep survived", stop, finished, st, len(acked(lines)))
		})
	}
}

// TestCrashBetweenPartitions kills a redemption whose two attestations go
// to two partitions, after its intent and after its first partition: the
// next Open removes what it wrote, so both attestations redeem again, and
// every acknowledged request stays redeemed in both partitions.
func TestCrashBetweenPartitions(t *testing.T) {
	for _, stop := range []string{"intent-written", "partition-written"} {
		t.Run(stop, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, nil)
			s.Close()
			lines := runUntilKilled(t, []string{helperEnv + "=multi", helperDirEnv + "=" + dir, helperStopEnv + "=" + stop},
				func(line string) bool { return line == "at "+stop || line == "answered" })
			if !slices.Contains(lines, "at "+stop) {
				t.Fatalf("the helper never stopped at %q: %v", stop, lines)
			}
			if n := len(acked(lines)); n != multiRequestCount {
				t.Fatalf("%d acknowledged requests, want %d", n, multiRequestCount)
			}
			s = openTest(t, dir, nil)
			ctx := context.Background()
			checkConsistent(t, s)
			if n := intents(t, s); n != 0 {
				t.Fatalf("%d intents left after Open", n)
			}
			// Before any write: the cut request's records are gone from
			// every partition (the count says so, not only a lookup).
			if n := replayCount(t, s); n != 2*multiRequestCount {
				t.Fatalf("%d replay records after recovery, want %d", n, 2*multiRequestCount)
			}
			for i := range multiRequestCount {
				wantRedeemed(t, errOf(s.Redeem(ctx, multiRequest(i))), 0)
				r := multiRequest(i)
				r.Replay = r.Replay[1:]
				wantRedeemed(t, errOf(s.Redeem(ctx, r)), 0)
			}
			// Never answered, half written, rolled back: it redeems now.
			if err := errOf(s.Redeem(ctx, multiRequest(multiRequestCount))); err != nil {
				t.Fatalf("the request cut by the crash: %v", err)
			}
			wantRedeemed(t, errOf(s.Redeem(ctx, multiRequest(multiRequestCount))), 0)
		})
	}
}

func intents(t *testing.T, s *DB) int {
	t.Helper()
	n := 0
	if err := s.view(context.Background(), func(tx *bolt.Tx) error {
		n = tx.Bucket(intentBucket).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func replayCount(t *testing.T, s *DB) int {
	t.Helper()
	inv, err := s.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return inv[0].Count
}

// checkConsistent runs bbolt's own page-level consistency check.
func checkConsistent(t *testing.T, s *DB) {
	t.Helper()
	var errs []error
	if err := s.view(context.Background(), func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("consistency check after the crash: %v", errs)
	}
}
