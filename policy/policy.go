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
	Horizon     Duration  `json:"horizon"`     // a batch covers at most this far ahead
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

// Attestations limits what redemption accepts.
type Attestations struct {
	MaxLifetime   Duration `json:"max_lifetime"`    // longest exp - now accepted
	MaxPerRequest int      `json:"max_per_request"` // attestations in one POST /v1/tokens
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
