package boltstore

import (
	"context"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

// BundleSequence reads the last number handed out and takes none.
func TestBundleSequenceReadsWithoutTaking(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), nil)
	if seq, err := s.BundleSequence(ctx); err != nil || seq != 0 {
		t.Fatalf("fresh store: %d, %v; want 0", seq, err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.NextBundleSequence(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if seq, err := s.BundleSequence(ctx); err != nil || seq != 3 {
			t.Fatalf("after three: %d, %v; want 3", seq, err)
		}
	}
	if next, err := s.NextBundleSequence(ctx); err != nil || next != 4 {
		t.Fatalf("next after reads: %d, %v; want 4", next, err)
	}
}

// AuditRecords gives Audit's entries in Audit's order, each with the
// deadline it was appended with (rounded up to the second).
func TestAuditRecordsCarryDeadlines(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), nil)
	entries := []struct {
		e        issuer.AuditEntry
		deadline time.Time
	}{
		{issuer.AuditEntry{Time: t0, Admin: "a", Action: "x"}, t0.Add(90 * 24 * time.Hour)},
		// A later entry with an earlier deadline (retention shortened):
		// order is by time, not by deadline.
		{issuer.AuditEntry{Time: t0.Add(time.Minute), Admin: "b", Action: "y"}, t0.Add(30*24*time.Hour + 500*time.Millisecond)},
	}
	for _, x := range entries {
		if err := s.AppendAudit(ctx, x.e, x.deadline); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.AuditRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d records, want 2", len(got))
	}
	for i, x := range entries {
		want := x.deadline.Truncate(time.Second)
		if x.deadline.Nanosecond() > 0 {
			want = want.Add(time.Second)
		}
		if got[i].Entry.Action != x.e.Action || !got[i].Entry.Time.Equal(x.e.Time) || !got[i].Deadline.Equal(want) {
			t.Errorf("record %d: %+v, want %+v until %s", i, got[i], x.e, want)
		}
	}
}
