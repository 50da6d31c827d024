package etcdstore

import "testing"

// Which keys wake a replica: what it decides with and serves, not the
// audit log, history, epoch keys, sequences, leases or the election.
func TestWatched(t *testing.T) {
	s := &Store{p: "/hc/"}
	for k, want := range map[string]bool{
		"/hc/config/policy":                        true,
		"/hc/config/attester/lab":                  true,
		"/hc/config/admin_token/ops":               true,
		"/hc/config/bundle_key":                    true,
		"/hc/config/published_bundle":              true,
		"/hc/keys/00000000001733400000/k1":         true,
		"/hc/withdrawn/00000000001733400000/k1":    true,
		"/hc/config/policyx":                       false,
		"/hc/config/bundle_sequence":               false,
		"/hc/config/kek_check":                     false,
		"/hc/audit/00000000001733400000/0a1b":      false,
		"/hc/policy_history/00000000001733400000/": false,
		"/hc/epoch/00000000001733400000":           false,
		"/hc/leases/00000000001733400000":          false,
		"/hc/leader/694d8a1c2f":                    false,
		"/hc/lock/schedule/694d8a1c2f":             false,
		"/other/config/policy":                     false,
	} {
		if got := s.isWatched([]byte(k)); got != want {
			t.Errorf("isWatched(%s) = %v, want %v", k, got, want)
		}
	}
}
