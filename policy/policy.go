// Package policy is the administrator's document: colour rules, token
// lifetimes, the window grid, holder binding and retention. Parse is strict
// (unknown fields refused, every error names the field); Evaluate and
// Windows are pure functions of (policy, evidence, now).
//
// The document is JSON. The standard library decodes it strictly with no
// extra dependency, and the admin API speaks JSON already, so the file an
// operator edits and the body they PUT are the same format. Durations are
// strings ("72h", "30d"), colours are names ("green").
//
// The flow is read bytes -> Parse (strict decode, then Validate) -> use.
// Validate has no side effects and fills in no defaults: what was validated
// is what runs. Default is a complete, sensible policy for a city.
package policy

import (
	"time"

	"github.com/healthcode/healthcode/attestation"
)

// Policy is one version of the document. JSON field names are the document's.
type Policy struct {
	Version      int          `json:"version"`
	Name         string       `json:"name,omitempty"`
	Rules        []Rule       `json:"rules"`
	Default      Colour       `json:"default_colour"`
	Tokens       Tokens       `json:"tokens"`
	Renewal      Renewal      `json:"renewal"`
	HolderHint   HintMode     `json:"holder_binding"`
	Attestations Attestations `json:"attestations"`
	Retention    Retention    `json:"retention"`
	Keys         Keys         `json:"keys"`
	Bundle       BundleTimes  `json:"bundle"`
	Counting     bool         `json:"verifier_counting"`
}

// Rule gives colour to an attestation of kind from At+After until
// At+After+For.
type Rule struct {
	Kind   attestation.Kind `json:"kind"`
	Colour Colour           `json:"colour"`
	After  Duration         `json:"after,omitempty"`
	For    Duration         `json:"for"`
}

// Tokens shapes the batch.
type Tokens struct {
	Lifetime    Lifetimes `json:"lifetime"`    // longest validity window per colour
	Copies      int       `json:"copies"`      // tokens per window (invariant 4)
	Granularity Duration  `json:"granularity"` // every token time is a multiple of this
	Horizon     Duration  `json:"horizon"`     // a batch covers this far ahead, plus renewal.overlap
	ClockSkew   Duration  `json:"clock_skew"`
}

// Lifetimes per colour.
type Lifetimes struct {
	Green  Duration `json:"green"`
	Yellow Duration `json:"yellow"`
	Red    Duration `json:"red"`
}

// HintMode is the holder-binding mode.
type HintMode string

const (
	HintNone HintMode = "none"
	HintOn   HintMode = "hint"
)

// Renewal lets long-lived evidence keep the wallet supplied without a
// revisit: an attestation redeems once per period, and each batch reaches
// tokens.horizon + overlap ahead, so the wallet may renew from the end of
// the period (which is at most the horizon) and still has codes for the
// overlap while it waits to be online.
type Renewal struct {
	Period  Duration `json:"period"`  // an attestation redeems once per period
	Overlap Duration `json:"overlap"` // a batch reaches this far past tokens.horizon
}

// Attestations limits what redemption accepts.
type Attestations struct {
	// MaxLifetime is the longest exp - now accepted for a kind that
	// Lifetimes leaves out (every kind, in documents written before
	// per-kind lifetimes existed).
	MaxLifetime   Duration      `json:"max_lifetime"`
	Lifetimes     KindLifetimes `json:"lifetimes"`       // longest exp - now accepted, per kind
	MaxPerRequest int           `json:"max_per_request"` // attestations in one POST /v1/tokens
}

// KindLifetimes bounds, per attestation kind, how far ahead of the
// redemption an attestation may expire. Parse fills a kind the document
// leaves out (see Parse), so a parsed policy names every kind.
type KindLifetimes struct {
	TestNegative   Duration `json:"test-negative"`
	TestPositive   Duration `json:"test-positive"`
	Vaccination    Duration `json:"vaccination"`
	Recovery       Duration `json:"recovery"`
	ExposureNotice Duration `json:"exposure-notice"`
	IsolationOrder Duration `json:"isolation-order"`
}

// field returns the lifetime of kind k, or nil for a kind it does not know.
func (l *KindLifetimes) field(k attestation.Kind) *Duration {
	switch k {
	case attestation.TestNegative:
		return &l.TestNegative
	case attestation.TestPositive:
		return &l.TestPositive
	case attestation.Vaccination:
		return &l.Vaccination
	case attestation.Recovery:
		return &l.Recovery
	case attestation.ExposureNotice:
		return &l.ExposureNotice
	case attestation.IsolationOrder:
		return &l.IsolationOrder
	}
	return nil
}

// Of returns the longest lifetime accepted for an attestation of kind k
// (0 for a kind it does not know).
func (l KindLifetimes) Of(k attestation.Kind) time.Duration {
	if f := l.field(k); f != nil {
		return f.D()
	}
	return 0
}

// Longest is the longest lifetime of any kind.
func (l KindLifetimes) Longest() time.Duration {
	var m time.Duration
	for _, k := range attestation.Kinds {
		m = max(m, l.Of(k))
	}
	return m
}

// Retention per data category, and the sweep interval.
type Retention struct {
	Replay        Duration `json:"replay"`
	Counts        Duration `json:"counts"`
	Audit         Duration `json:"audit"`
	RetiredKeys   Duration `json:"retired_keys"`
	PolicyHistory Duration `json:"policy_history"`
	SweepInterval Duration `json:"sweep_interval"`
}

// Keys sets the token-signing key schedule.
type Keys struct {
	Lifetime Duration `json:"lifetime"` // a key's validity (nbf..naf)
	Rotation Duration `json:"rotation"` // a new key becomes current this often
}

// BundleTimes sets how long a trust bundle is fresh and valid.
type BundleTimes struct {
	StaleAfter Duration `json:"stale_after"`
	Lifetime   Duration `json:"lifetime"`
}

// Reach is how far ahead of a redemption a batch covers at most:
// tokens.horizon + renewal.overlap.
// It saturates rather than overflow for a policy that does not validate.
func (p *Policy) Reach() time.Duration {
	return addSat(max(p.Tokens.Horizon.D(), 0), max(p.Renewal.Overlap.D(), 0))
}

// Decision is what the policy makes of the evidence at a time: a colour and
// the evidence window that justifies it.
type Decision struct {
	Colour Colour
	From   time.Time
	Until  time.Time
}

// Window is one validity window of a batch.
type Window struct {
	NotBefore time.Time
	Expires   time.Time
}
