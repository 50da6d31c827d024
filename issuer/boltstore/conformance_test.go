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
	key, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, func(t *testing.T, clock issuer.Clock) issuer.Store {
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
	})
}
