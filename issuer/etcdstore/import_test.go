package etcdstore_test

import (
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

// What issuer migrate adds: a fresh prefix holds no state (the KEK check
// New writes does not count), a withdrawal imported without its key is
// listed, and the bundle sequence is raised, never lowered.
func TestImportIntoAFreshPrefix(t *testing.T) {
	c := startCluster(t)
	ctx := testCtx(t)
	s := c.open(t, c.client(t), c.newPrefix(), newClock())
	if held, err := s.HeldState(ctx); err != nil || held != "" {
		t.Fatalf("fresh prefix holds %q, %v", held, err)
	}

	w := issuer.WithdrawnKey{ID: "k-old", At: time.Now().UTC().Truncate(time.Second), Until: time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)}
	if err := s.ImportWithdrawal(ctx, w); err != nil {
		t.Fatal(err)
	}
	got, err := s.WithdrawnKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != w.ID || !got[0].Until.Equal(w.Until) || !got[0].At.Equal(w.At) {
		t.Fatalf("withdrawals %+v, want %+v", got, w)
	}
	if held, err := s.HeldState(ctx); err != nil || held != "withdrawn/" {
		t.Fatalf("after a withdrawal the prefix holds %q, %v; want withdrawn/", held, err)
	}

	if err := s.RaiseBundleSequence(ctx, 41); err != nil {
		t.Fatal(err)
	}
	if err := s.RaiseBundleSequence(ctx, 7); err != nil { // below: kept at 41
		t.Fatal(err)
	}
	if next, err := s.NextBundleSequence(ctx); err != nil || next != 42 {
		t.Fatalf("next bundle sequence %d, %v; want 42", next, err)
	}
}
