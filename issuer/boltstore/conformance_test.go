package boltstore_test

import (
	"testing"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/storetest"
)

// TestConformance runs the issuer.Store suite that every adapter passes
// on a real bbolt store in a temp directory.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock issuer.Clock) issuer.Store { return openFresh(t, clock) })
}

// TestStateConformance runs the issuer.StateStore suite. bbolt is a single
// issuer's store: it implements no issuer.Sharing, so RunSharing is not
// for it.
func TestStateConformance(t *testing.T) {
	storetest.RunState(t, func(t *testing.T, clock issuer.Clock) issuer.StateStore { return openFresh(t, clock) })
}

// openFresh opens a new store in a temp directory, closed by t.Cleanup.
func openFresh(t *testing.T, clock issuer.Clock) *boltstore.DB {
	key, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := boltstore.Open(t.TempDir(), boltstore.Options{KEK: key, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}
