package policy

import (
	"encoding/json"
	"time"

	"github.com/healthcode/healthcode/attestation"
)

// Default values, and why
//
// Colour rules (the event time is when the sample was taken, the dose given,
// the order made):
//   - test-positive: red for 10d. The usual isolation period counted from
//     the sample.
//   - isolation-order: red for 14d. A health officer's order covers the
//     usual quarantine; a longer one is a new order.
//   - exposure-notice: yellow for 7d. A contact is asked to take care and
//     test for about a week; it is not proof of infection, so not red.
//   - test-negative: green for 72h. Venues took a negative test for two to
//     three days; after that it says little.
//   - vaccination: green from 14d after the dose, for 180d. Protection is
//     assumed two weeks after the dose, and half a year is what certificate
//     schemes granted.
//   - recovery: green for 90d, a conservative reading of post-infection
//     protection.
//   - default_colour yellow: no evidence means "unknown", which is neither a
//     clean bill of health nor grounds to mark anyone red.
//
// Tokens:
//   - lifetime 24h for every colour: a token copied to someone else helps
//     them for a day at most. Windows sit on the UTC-day grid, so everyone's
//     tokens share the same times (invariant 4).
//   - copies 6: a fresh copy for each of a few venues a day, so venues that
//     compare what they saw cannot link one visitor.
//   - granularity 1h: token times are whole hours; every resident holding
//     tokens shares them, and none reveals when a test was taken.
//   - horizon 7d: a batch covers a week (plus the renewal overlap), so the
//     wallet works offline for a week.
//   - clock_skew 5m: network-synced phones and tablets agree within seconds;
//     five minutes covers a tablet that has been offline for weeks.
//   - holder_binding none: a hint (initials, birth year) is personal data on
//     every token; a city turns it on only if sharing becomes a real problem.
//
// Renewal:
//   - period 7d, the horizon: an attestation redeems once a week, so a
//     vaccination keeps the wallet supplied for its whole 180 days without
//     a clinic visit, and each replay record lives a week at most.
//   - overlap 2d: each batch reaches two days past the horizon, so from the
//     moment the wallet may renew it still has two days of codes, enough
//     for a phone that is offline over a weekend. (With no overlap, the
//     codes would end exactly when renewal opens, and the hour rounding of
//     both would leave a gap.)
//
// Attestations:
//   - lifetimes: as long as the kind's rule gives it colour (after + for):
//     a vaccination 194d (14d wait, 180d green), a recovery 90d, a negative
//     test 3d, a positive test 10d, an exposure notice 7d, an isolation
//     order 14d. The wallet renews with it until its evidence ends.
//   - max_lifetime 72h: the bound for a kind a document does not list in
//     lifetimes (every kind, in documents written before lifetimes).
//   - max_per_request 8: a resident has a handful at once (a test, a dose,
//     a recovery), never dozens.
//
// Retention (invariant 5; every deadline is public):
//   - replay 7d: a record lives until its renewal period ends (or until its
//     attestation can no longer be accepted, if sooner), so one week is the
//     shortest that still stops a second redemption in a period.
//   - counts 30d: aggregate counts per colour per day, kept a month to show
//     a trend; they name nobody.
//   - audit 365d: administrators' actions (policy changes, key rotations,
//     attester registrations) stay reviewable for a year; no resident data.
//   - retired_keys 30d: a retired key is kept a month so a disputed token
//     can still be checked, then destroyed.
//   - policy_history 90d: past policy versions, so an operator can explain a
//     colour given in the last quarter.
//   - sweep_interval 10m: records go within ten minutes of their deadline; a
//     sweep is a cursor walk from the start of each bucket, cheap to repeat.
//
// Keys:
//   - lifetime 30d, rotation 7d: a new signing key each week, each valid for
//     long enough (at least rotation + horizon + overlap, 16d) to sign a
//     full batch before it ends; a leaked key is worthless within a month.
//
// Trust bundle:
//   - stale_after 24h, lifetime 7d: verifiers sync daily; one offline for up
//     to a week keeps working with a warning, then refuses.
//
// verifier_counting false: counting is opt-in per venue; the policy does not
// turn it on for everyone.

// Default is the city default policy described above. Each call returns a
// fresh copy that the caller may change.
func Default() *Policy {
	const d = day
	return &Policy{
		Version: 1,
		Name:    "city default",
		Rules: []Rule{
			{Kind: attestation.TestPositive, Colour: Red, For: Duration(10 * d)},
			{Kind: attestation.IsolationOrder, Colour: Red, For: Duration(14 * d)},
			{Kind: attestation.ExposureNotice, Colour: Yellow, For: Duration(7 * d)},
			{Kind: attestation.TestNegative, Colour: Green, For: Duration(72 * time.Hour)},
			{Kind: attestation.Vaccination, Colour: Green, After: Duration(14 * d), For: Duration(180 * d)},
			{Kind: attestation.Recovery, Colour: Green, For: Duration(90 * d)},
		},
		Default: Yellow,
		Tokens: Tokens{
			Lifetime: Lifetimes{
				Green:  Duration(24 * time.Hour),
				Yellow: Duration(24 * time.Hour),
				Red:    Duration(24 * time.Hour),
			},
			Copies:      6,
			Granularity: Duration(time.Hour),
			Horizon:     Duration(7 * d),
			ClockSkew:   Duration(5 * time.Minute),
		},
		Renewal: Renewal{
			Period:  Duration(7 * d),
			Overlap: Duration(DefaultOverlap),
		},
		HolderHint: HintNone,
		Attestations: Attestations{
			MaxLifetime: Duration(72 * time.Hour),
			Lifetimes: KindLifetimes{
				TestNegative:   Duration(72 * time.Hour),
				TestPositive:   Duration(10 * d),
				Vaccination:    Duration(194 * d),
				Recovery:       Duration(90 * d),
				ExposureNotice: Duration(7 * d),
				IsolationOrder: Duration(14 * d),
			},
			MaxPerRequest: 8,
		},
		Retention: Retention{
			Replay:        Duration(7 * d),
			Counts:        Duration(30 * d),
			Audit:         Duration(365 * d),
			RetiredKeys:   Duration(30 * d),
			PolicyHistory: Duration(90 * d),
			SweepInterval: Duration(10 * time.Minute),
		},
		Keys: Keys{
			Lifetime: Duration(30 * d),
			Rotation: Duration(7 * d),
		},
		Bundle: BundleTimes{
			StaleAfter: Duration(24 * time.Hour),
			Lifetime:   Duration(7 * d),
		},
		Counting: false,
	}
}

// DefaultJSON is Default as an indented document ending in a newline, the
// same bytes on every call: what `issuer serve` embeds and the README shows.
func DefaultJSON() []byte {
	b, err := json.MarshalIndent(Default(), "", "  ")
	if err != nil {
		panic("policy: default does not encode: " + err.Error()) // a bug, caught by the tests
	}
	return append(b, '\n')
}
