package storetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

// OpenShared returns two handles on one new, empty shared state, as two
// issuer replicas would hold them (two clients, not one client twice),
// both reading the time from clock. It registers their closing with
// t.Cleanup. Calls of one RunSharing may share a backing cluster, but two
// calls must not see each other's state.
type OpenShared func(t *testing.T, clock issuer.Clock) (a, b issuer.Sharing)

// sharingEnv is one case's two handles.
type sharingEnv struct {
	t    *testing.T
	ctx  context.Context
	a, b issuer.Sharing
}

// lockBound bounds one LockSchedule that must succeed: a lock that is
// never released fails the case instead of hanging the run.
const lockBound = 30 * time.Second

func newSharingEnv(t *testing.T, open OpenShared) *sharingEnv {
	c := &Clock{t: time.Now().UTC().Truncate(time.Hour)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	a, b := open(t, c)
	return &sharingEnv{t: t, ctx: ctx, a: a, b: b}
}

// RunSharing runs every case of the issuer.Sharing suite, each on a shared
// state of its own: PublishBundle is a compare-and-set (ErrStale for a
// sequence not above the published one, from either handle); the schedule
// lock excludes the other handle and other callers on the same handle
// (the issuer takes it before its own mutex), is taken again after
// unlock, and a
// LockSchedule whose ctx is cancelled, before or while it waits, fails
// with an error that errors.Is context.Canceled and leaves the lock free.
func RunSharing(t *testing.T, open OpenShared) {
	cases := []struct {
		name string
		f    func(*sharingEnv)
	}{
		{"PublishCompareAndSet", testPublishCompareAndSet},
		{"PublishConcurrent", testPublishConcurrent},
		{"LockExcludesTheOtherHandle", testLockExcludes},
		{"LockExcludesOnOneHandle", testLockExcludesOnOneHandle},
		{"LockAgainAfterUnlock", testLockAgainAfterUnlock},
		{"LockCancelled", testLockCancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.f(newSharingEnv(t, open)) })
	}
}

func (e *sharingEnv) published(h issuer.Sharing, name string, want issuer.PublishedBundle) {
	e.t.Helper()
	got, err := h.PublishedBundle(e.ctx)
	if err != nil {
		e.t.Fatalf("PublishedBundle on %s: %v", name, err)
	}
	if got != want {
		e.t.Fatalf("PublishedBundle on %s: %+v, want %+v", name, got, want)
	}
}

// lock takes the schedule lock on h, bounded by lockBound.
func (e *sharingEnv) lock(h issuer.Sharing, name string) func() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, lockBound)
	defer cancel()
	unlock, err := h.LockSchedule(ctx)
	if err != nil {
		e.t.Fatalf("LockSchedule on %s: %v", name, err)
	}
	return unlock
}

func testPublishCompareAndSet(e *sharingEnv) {
	for name, h := range map[string]issuer.Sharing{"a": e.a, "b": e.b} {
		if _, err := h.PublishedBundle(e.ctx); !errors.Is(err, issuer.ErrNotFound) {
			e.t.Fatalf("PublishedBundle on %s before the first: got %v, want issuer.ErrNotFound", name, err)
		}
	}
	first := issuer.PublishedBundle{Sequence: 5, Raw: "bundle five"}
	if err := e.a.PublishBundle(e.ctx, first); err != nil {
		e.t.Fatalf("first PublishBundle: %v", err)
	}
	e.published(e.a, "a", first)
	e.published(e.b, "b", first)
	// Not above the published sequence, from either handle: ErrStale, and
	// the published bundle stays.
	for _, c := range []struct {
		name string
		h    issuer.Sharing
		b    issuer.PublishedBundle
	}{
		{"the same sequence from b", e.b, issuer.PublishedBundle{Sequence: 5, Raw: "another five"}},
		{"a lower sequence from b", e.b, issuer.PublishedBundle{Sequence: 4, Raw: "bundle four"}},
		{"the same sequence from a", e.a, issuer.PublishedBundle{Sequence: 5, Raw: "bundle five"}},
		{"sequence 0 from a", e.a, issuer.PublishedBundle{Sequence: 0, Raw: "bundle zero"}},
	} {
		if err := c.h.PublishBundle(e.ctx, c.b); !errors.Is(err, issuer.ErrStale) {
			e.t.Fatalf("PublishBundle of %s: got %v, want issuer.ErrStale", c.name, err)
		}
		e.published(e.a, "a", first)
		e.published(e.b, "b", first)
	}
	// The newest wins, whichever handle publishes it.
	six := issuer.PublishedBundle{Sequence: 6, Raw: "bundle six"}
	if err := e.b.PublishBundle(e.ctx, six); err != nil {
		e.t.Fatalf("PublishBundle 6 on b: %v", err)
	}
	e.published(e.a, "a", six)
	hundred := issuer.PublishedBundle{Sequence: 100, Raw: "bundle hundred"}
	if err := e.a.PublishBundle(e.ctx, hundred); err != nil {
		e.t.Fatalf("PublishBundle 100 on a: %v", err)
	}
	e.published(e.b, "b", hundred)
	if err := e.b.PublishBundle(e.ctx, six); !errors.Is(err, issuer.ErrStale) {
		e.t.Fatalf("PublishBundle of 6 after 100: got %v, want issuer.ErrStale", err)
	}
	e.published(e.a, "a", hundred)
}

func testPublishConcurrent(e *sharingEnv) {
	// Racers on both handles publish sequences 1..n at once: whatever the
	// order, the highest is published in the end (nothing is above it),
	// and every other outcome is a success or ErrStale.
	const n = 2 * racers
	errs := race(n, func(i int) error {
		h := e.a
		if i%2 == 1 {
			h = e.b
		}
		return h.PublishBundle(e.ctx, issuer.PublishedBundle{Sequence: uint64(i + 1), Raw: fmt.Sprint("bundle ", i+1)})
	})
	for i, err := range errs {
		if err != nil && !errors.Is(err, issuer.ErrStale) {
			e.t.Fatalf("PublishBundle %d: %v", i+1, err)
		}
	}
	if errs[n-1] != nil {
		e.t.Fatalf("PublishBundle of the highest sequence %d: %v", n, errs[n-1])
	}
	want := issuer.PublishedBundle{Sequence: n, Raw: fmt.Sprint("bundle ", n)}
	e.published(e.a, "a", want)
	e.published(e.b, "b", want)
}

func testLockExcludes(e *sharingEnv) {
	// One goroutine per handle: the exclusion under test is between
	// replicas (LockExcludesOnOneHandle has it within one). Each
	// holder does a read-modify-write of the shared state (publish the
	// sequence above the one it reads), a round trip as long as the lock's
	// own; two holders at once would read the same sequence and one would
	// get ErrStale. A counter inside shows an overlap without a store too.
	const rounds = 10
	var inside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for name, h := range map[string]issuer.Sharing{"a": e.a, "b": e.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := lockRounds(e.ctx, h, rounds, &inside); err != nil {
				errs <- fmt.Errorf("handle %s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	want := issuer.PublishedBundle{Sequence: 2 * rounds, Raw: fmt.Sprint("bundle ", 2*rounds)}
	e.published(e.a, "a", want)
	e.published(e.b, "b", want)
}

func testLockExcludesOnOneHandle(e *sharingEnv) {
	// Two callers on one handle, as two admin calls on one replica: the
	// issuer takes the shared lock before its own mutex.
	const rounds = 10
	var inside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, name := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := lockRounds(e.ctx, e.a, rounds, &inside); err != nil {
				errs <- fmt.Errorf("%s caller on handle a: %w", name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	e.published(e.b, "b", issuer.PublishedBundle{Sequence: 2 * rounds, Raw: fmt.Sprint("bundle ", 2*rounds)})
}

// lockRounds takes h's schedule lock rounds times and, holding it,
// publishes the bundle after the published one.
func lockRounds(ctx context.Context, h issuer.Sharing, rounds int, inside *atomic.Int32) error {
	for r := 0; r < rounds; r++ {
		lctx, cancel := context.WithTimeout(ctx, lockBound)
		unlock, err := h.LockSchedule(lctx)
		cancel()
		if err != nil {
			return fmt.Errorf("LockSchedule: %w", err)
		}
		err = func() error {
			defer unlock()
			if inside.Add(1) != 1 {
				return errors.New("two holders of the schedule lock at once")
			}
			defer inside.Add(-1)
			var seq uint64
			cur, err := h.PublishedBundle(ctx)
			switch {
			case errors.Is(err, issuer.ErrNotFound):
			case err != nil:
				return fmt.Errorf("PublishedBundle: %w", err)
			default:
				seq = cur.Sequence
			}
			runtime.Gosched()
			next := issuer.PublishedBundle{Sequence: seq + 1, Raw: fmt.Sprint("bundle ", seq+1)}
			if err := h.PublishBundle(ctx, next); err != nil {
				return fmt.Errorf("PublishBundle %d under the lock: %w (another holder published meanwhile)", seq+1, err)
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

func testLockAgainAfterUnlock(e *sharingEnv) {
	unlock := e.lock(e.a, "a")
	unlock()
	unlock = e.lock(e.a, "a again")
	unlock()
	unlock = e.lock(e.b, "b after a")
	// b holds it: a waits until b unlocks, then gets it.
	got := make(chan error, 1)
	var aUnlock func()
	go func() {
		ctx, cancel := context.WithTimeout(e.ctx, lockBound)
		defer cancel()
		var err error
		aUnlock, err = e.a.LockSchedule(ctx)
		got <- err
	}()
	unlock()
	if err := <-got; err != nil {
		e.t.Fatalf("LockSchedule on a after b unlocked: %v", err)
	}
	aUnlock()
}

func testLockCancelled(e *sharingEnv) {
	// A cancelled ctx fails at once, lock free or not.
	cancelled, cancel := context.WithCancel(e.ctx)
	cancel()
	if unlock, err := e.a.LockSchedule(cancelled); !errors.Is(err, context.Canceled) {
		if err == nil {
			unlock()
		}
		e.t.Fatalf("LockSchedule on a free lock with a cancelled ctx: got %v, want context.Canceled", err)
	}
	unlock := e.lock(e.a, "a")
	if u, err := e.b.LockSchedule(cancelled); !errors.Is(err, context.Canceled) {
		if err == nil {
			u()
		}
		e.t.Fatalf("LockSchedule on a held lock with a cancelled ctx: got %v, want context.Canceled", err)
	}
	// A waiter whose ctx ends while a holds the lock gives up (a holds it
	// until the waiter has returned, so the wait cannot succeed) ...
	waiting, stop := context.WithCancel(e.ctx)
	got := make(chan error, 1)
	go func() {
		u, err := e.b.LockSchedule(waiting)
		if err == nil {
			u()
		}
		got <- err
	}()
	stop()
	if err := <-got; !errors.Is(err, context.Canceled) {
		e.t.Fatalf("LockSchedule on b cancelled while a holds the lock: got %v, want context.Canceled", err)
	}
	unlock()
	// ... and leaves nothing behind: both handles lock again.
	e.lock(e.b, "b after its cancelled wait")()
	e.lock(e.a, "a after b")()
}
