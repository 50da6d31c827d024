package etcdstore_test

import (
	"testing"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
)

// TestConformance runs the state and sharing suites every shared-state
// adapter passes, on a real 3-member etcd: each case on a prefix of its
// own, the sharing cases with two stores on two clients.
func TestConformance(t *testing.T) {
	c := startCluster(t)
	cli := c.client(t)
	t.Run("State", func(t *testing.T) {
		storetest.RunState(t, func(t *testing.T, clock issuer.Clock) issuer.StateStore {
			return c.open(t, cli, c.newPrefix(), clock)
		})
	})
	other := c.client(t)
	t.Run("Sharing", func(t *testing.T) {
		storetest.RunSharing(t, func(t *testing.T, clock issuer.Clock) (a, b issuer.Sharing) {
			p := c.newPrefix()
			return c.open(t, cli, p, clock), c.open(t, other, p, clock)
		})
	})
}
