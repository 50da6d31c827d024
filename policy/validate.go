package policy

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/healthcode/healthcode/attestation"
)

// Limits that Validate enforces. Each keeps a mistaken or hostile policy
// from making the issuer do unbounded work or hand out tokens that say more
// than the evidence does.
const (
	MaxNameLen       = 128         // bytes; the name is shown by verifiers
	MaxCopies        = 32          // tokens per window
	MaxWindows       = 32          // windows per batch, so copies*windows stays small
	MaxHorizon       = 31 * day    // a batch never covers more than a month
	MaxClockSkew     = time.Hour   // more would make expiry meaningless
	MaxPerRequest    = 16          // attestations in one POST /v1/tokens
	MaxRuleDuration  = 3650 * day  // ten years: catches typos, keeps time arithmetic far from overflow
	MinSweepInterval = time.Second // a tighter loop would only burn CPU
	MaxRules         = 6           // one rule per attestation kind
	maxDuration      = time.Duration(math.MaxInt64)
)

// FieldError is one thing wrong with a policy: the field's path in the
// document ("rules[2].for", "tokens.lifetime.green"; empty for the document
// as a whole) and the reason.
type FieldError struct {
	Field  string
	Reason string
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// ValidationError lists everything wrong with a policy, in document order,
// so an administrator fixes it in one round.
type ValidationError struct {
	Errors []FieldError
}

// Error joins the field errors with "; ".
func (e *ValidationError) Error() string {
	s := make([]string, len(e.Errors))
	for i, f := range e.Errors {
		s[i] = f.String()
	}
	return strings.Join(s, "; ")
}

func fieldErr(field, reason string) *ValidationError {
	return &ValidationError{Errors: []FieldError{{Field: field, Reason: reason}}}
}

// problems collects field errors.
type problems []FieldError

func (ps *problems) add(field, format string, a ...any) {
	*ps = append(*ps, FieldError{Field: field, Reason: fmt.Sprintf(format, a...)})
}

// positive checks d > 0 and reports whether it is.
func (ps *problems) positive(field string, d Duration) bool {
	if d <= 0 {
		ps.add(field, "must be positive, got %s", d)
		return false
	}
	return true
}

// Valid reports whether m is a known holder-binding mode.
func (m HintMode) Valid() bool { return m == HintNone || m == HintOn }

// Validate checks the policy without changing it: it fills in no defaults,
// so what is validated is exactly what is stored and used. It returns nil
// or a *ValidationError listing every problem, each naming its field path,
// for example
//
//	rules[2].for: must be positive, got 0s
//	retention.replay: must be at least attestations.max_lifetime + 2*tokens.clock_skew (3d10m), got 1d
//
// A check that relates two fields runs only when both are valid by
// themselves, so one mistake is reported once.
func (p *Policy) Validate() error {
	if p == nil {
		return fieldErr("", "policy is missing")
	}
	var ps problems

	if p.Version < 1 {
		ps.add("version", "must be at least 1, got %d", p.Version)
	}
	if len(p.Name) > MaxNameLen {
		ps.add("name", "must be at most %d bytes, got %d", MaxNameLen, len(p.Name))
	} else if !utf8.ValidString(p.Name) {
		ps.add("name", "must be valid UTF-8")
	}

	rulesOK := p.validateRules(&ps)
	colour(&ps, "default_colour", p.Default)
	p.validateTokens(&ps)
	p.validateRenewal(&ps)

	if !p.HolderHint.Valid() {
		ps.add("holder_binding", "must be %q or %q, got %s", HintNone, HintOn, quote(string(p.HolderHint)))
	}

	a := p.Attestations
	maxLifeOK := ps.positive("attestations.max_lifetime", a.MaxLifetime)
	lifetimesOK := p.validateLifetimes(&ps, maxLifeOK && rulesOK)
	if a.MaxPerRequest < 1 || a.MaxPerRequest > MaxPerRequest {
		ps.add("attestations.max_per_request", "must be between 1 and %d, got %d", MaxPerRequest, a.MaxPerRequest)
	}

	p.validateRetention(&ps, maxLifeOK && lifetimesOK)
	p.validateKeys(&ps)

	b := p.Bundle
	if ps.positive("bundle.stale_after", b.StaleAfter) && b.Lifetime <= b.StaleAfter {
		ps.add("bundle.lifetime", "must be longer than bundle.stale_after (%s), got %s", b.StaleAfter, b.Lifetime)
	}

	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Errors: ps}
}

func colour(ps *problems, field string, c Colour) {
	switch {
	case c == 0:
		ps.add(field, "must be green, yellow or red, got none")
	case !c.Valid():
		ps.add(field, "must be green, yellow or red, got %d", int(c))
	}
}

// validateRules reports whether the rules are valid.
func (p *Policy) validateRules(ps *problems) bool {
	before := len(*ps)
	switch {
	case len(p.Rules) == 0:
		ps.add("rules", "must have at least one rule")
		return false
	case len(p.Rules) > MaxRules:
		// There are only MaxRules kinds; listing every duplicate of a
		// pasted-in thousand rules helps nobody.
		ps.add("rules", "must have at most %d rules (one per attestation kind), got %d", MaxRules, len(p.Rules))
		return false
	}
	for i, r := range p.Rules {
		f := fmt.Sprintf("rules[%d].", i)
		switch {
		case !r.Kind.Valid():
			ps.add(f+"kind", "must be one of %s, got %s", attestation.KindNames(), quote(string(r.Kind)))
		default:
			for j, q := range p.Rules[:i] {
				if q.Kind == r.Kind {
					// One rule per kind keeps the colour of a piece of
					// evidence readable from one line of the document.
					ps.add(f+"kind", "%q already has a rule (rules[%d]); one rule per kind", r.Kind, j)
					break
				}
			}
		}
		colour(ps, f+"colour", r.Colour)
		switch {
		case r.After < 0:
			ps.add(f+"after", "must not be negative, got %s", r.After)
		case r.After.D() > MaxRuleDuration:
			ps.add(f+"after", "must be at most %s, got %s", Duration(MaxRuleDuration), r.After)
		}
		switch {
		case r.For <= 0:
			ps.add(f+"for", "must be positive, got %s", r.For)
		case r.For.D() > MaxRuleDuration:
			ps.add(f+"for", "must be at most %s, got %s", Duration(MaxRuleDuration), r.For)
		}
	}
	return len(*ps) == before
}

func (p *Policy) validateTokens(ps *problems) {
	t := p.Tokens
	g := t.Granularity.D()
	gOK := false
	switch {
	case g <= 0:
		ps.add("tokens.granularity", "must be positive, got %s", t.Granularity)
	case g%time.Second != 0:
		// Token times are JWT NumericDates: whole seconds.
		ps.add("tokens.granularity", "must be a whole number of seconds, got %s", t.Granularity)
	case day%g != 0:
		// So that the window grid lines up with UTC days.
		ps.add("tokens.granularity", "must divide 24h exactly, got %s", t.Granularity)
	default:
		gOK = true
	}

	h := t.Horizon.D()
	hOK := false
	switch {
	case h <= 0:
		ps.add("tokens.horizon", "must be positive, got %s", t.Horizon)
	case h > MaxHorizon:
		ps.add("tokens.horizon", "must be at most %s, got %s", Duration(MaxHorizon), t.Horizon)
	default:
		hOK = true
	}
	// The batch reaches the horizon plus the renewal overlap; an overlap
	// that is itself wrong is reported under renewal, and the window count
	// is then checked against the horizon alone.
	reach := h
	reachName := "tokens.horizon"
	if o := p.Renewal.Overlap.D(); hOK && o > 0 && o <= h {
		reach, reachName = h+o, "tokens.horizon + renewal.overlap"
	}

	for _, c := range Colours {
		f := "tokens.lifetime." + c.String()
		l := t.Lifetime.Of(c)
		switch {
		case l <= 0:
			ps.add(f, "must be positive, got %s", Duration(l))
		case gOK && l%g != 0:
			ps.add(f, "must be a multiple of tokens.granularity (%s), got %s", t.Granularity, Duration(l))
		case hOK && l > h:
			ps.add(f, "must be at most tokens.horizon (%s), got %s", t.Horizon, Duration(l))
		case hOK && batchWindows(reach, l) > MaxWindows:
			ps.add(f, "must be long enough that a batch over %s (%s) has at most %d windows, got %s (%d windows)",
				reachName, Duration(reach), MaxWindows, Duration(l), batchWindows(reach, l))
		}
	}

	if t.Copies < 1 || t.Copies > MaxCopies {
		ps.add("tokens.copies", "must be between 1 and %d, got %d", MaxCopies, t.Copies)
	}
	switch {
	case t.ClockSkew < 0:
		ps.add("tokens.clock_skew", "must not be negative, got %s", t.ClockSkew)
	case t.ClockSkew.D() > MaxClockSkew:
		ps.add("tokens.clock_skew", "must be at most %s, got %s", Duration(MaxClockSkew), t.ClockSkew)
	}
}

// batchWindows is the most windows Windows can return for lifetime l over
// horizon h: the partial window holding now, then ceil(h/l) more at most.
func batchWindows(h, l time.Duration) int64 {
	return 1 + int64((h+l-1)/l)
}

func (p *Policy) validateRetention(ps *problems, lifetimesOK bool) {
	r := p.Retention
	fields := [...]struct {
		name string
		d    Duration
	}{
		{"retention.replay", r.Replay},
		{"retention.counts", r.Counts},
		{"retention.audit", r.Audit},
		{"retention.retired_keys", r.RetiredKeys},
		{"retention.policy_history", r.PolicyHistory},
	}
	shortest := -1
	for i, f := range fields {
		if !ps.positive(f.name, f.d) {
			continue
		}
		if shortest < 0 || f.d < fields[shortest].d {
			shortest = i
		}
		if skew := p.Tokens.ClockSkew.D(); i == 0 && lifetimesOK && p.periodOK() && skew >= 0 && skew <= MaxClockSkew {
			// A replay record lives until the end of the attestation's
			// renewal period, or until the attestation can no longer be
			// accepted if that is sooner: now <= exp + skew, where exp may
			// lie up to its lifetime + skew after the redemption. A record
			// that goes sooner would let it redeem twice in one period.
			life, lifeName := p.longestLifetime()
			need := addSat(life, 2*skew)
			switch period := p.Renewal.Period.D(); {
			case period <= need && f.d.D() < period:
				ps.add(f.name, "must be at least renewal.period (%s), got %s", p.Renewal.Period, f.d)
			case period > need && f.d.D() < need:
				ps.add(f.name, "must be at least %s + 2*tokens.clock_skew (%s), got %s", lifeName, Duration(need), f.d)
			}
		}
	}

	switch s := r.SweepInterval.D(); {
	case s < MinSweepInterval:
		ps.add("retention.sweep_interval", "must be at least %s, got %s", Duration(MinSweepInterval), r.SweepInterval)
	case shortest >= 0 && s > fields[shortest].d.D():
		// A sweep less often than the shortest retention keeps records
		// past their deadline.
		ps.add("retention.sweep_interval", "must be at most the shortest retention (%s, %s), got %s",
			fields[shortest].name, fields[shortest].d, r.SweepInterval)
	}
}

func (p *Policy) validateKeys(ps *problems) {
	k := p.Keys
	lifeOK := ps.positive("keys.lifetime", k.Lifetime)
	rotOK := ps.positive("keys.rotation", k.Rotation)
	h := p.Tokens.Horizon.D()
	if lifeOK && rotOK && h > 0 && h <= MaxHorizon && p.Bundle.Lifetime > 0 {
		// A key signs until the next one activates: one rotation period,
		// or longer when a key must first sit in bundles for a whole bundle
		// lifetime. The last batch it signs reaches tokens.horizon +
		// renewal.overlap ahead,
		// and token exp is capped at the key's end, so a shorter key would
		// cut that batch short.
		signs := max(k.Rotation.D(), p.Bundle.Lifetime.D())
		reach, reachName := h, "tokens.horizon"
		if o := p.Renewal.Overlap.D(); o > 0 && o <= h {
			reach, reachName = h+o, "tokens.horizon + renewal.overlap"
		}
		if need := addSat(signs, reach); k.Lifetime.D() < need {
			ps.add("keys.lifetime", "must be at least max(keys.rotation, bundle.lifetime) + %s (%s), got %s", reachName, Duration(need), k.Lifetime)
		}
	}
}

// addSat adds non-negative durations, saturating instead of overflowing.
func addSat(a, b time.Duration) time.Duration {
	if a > maxDuration-b {
		return maxDuration
	}
	return a + b
}

// periodOK reports whether renewal.period is valid by itself and against
// tokens.horizon.
func (p *Policy) periodOK() bool {
	per, h := p.Renewal.Period.D(), p.Tokens.Horizon.D()
	return per > 0 && per%time.Hour == 0 && h > 0 && h <= MaxHorizon && per <= h
}

func (p *Policy) validateRenewal(ps *problems) {
	r := p.Renewal
	h := p.Tokens.Horizon.D()
	hOK := h > 0 && h <= MaxHorizon
	switch per := r.Period.D(); {
	case per <= 0:
		ps.add("renewal.period", "must be positive, got %s", r.Period)
	case per%time.Hour != 0:
		// Replay deadlines are whole hours (they say little of when an
		// attestation was redeemed); a period of whole hours keeps every
		// period the same length.
		ps.add("renewal.period", "must be a whole number of hours, got %s", r.Period)
	case hOK && per > h:
		// A period longer than the batch would leave the wallet without
		// codes before it may renew.
		ps.add("renewal.period", "must be at most tokens.horizon (%s), got %s", p.Tokens.Horizon, r.Period)
	}
	switch o := r.Overlap.D(); {
	case o < 0:
		ps.add("renewal.overlap", "must not be negative, got %s", r.Overlap)
	case hOK && o > h:
		// More overlap than a whole batch would let a wallet skip a
		// renewal and still have codes: the batch would just be longer.
		ps.add("renewal.overlap", "must be at most tokens.horizon (%s), got %s", p.Tokens.Horizon, r.Overlap)
	}
}

// validateLifetimes checks attestations.lifetimes and reports whether all
// of them are valid. rulesOK says the rules and max_lifetime are valid, so
// the bound they set can be checked.
func (p *Policy) validateLifetimes(ps *problems, rulesOK bool) bool {
	ok := true
	for _, k := range attestation.Kinds {
		f := "attestations.lifetimes." + string(k)
		l := p.Attestations.Lifetimes.Of(k)
		if l <= 0 {
			ps.add(f, "must be positive, got %s", Duration(l))
			ok = false
			continue
		}
		if l > MaxRuleDuration {
			ps.add(f, "must be at most %s, got %s", Duration(MaxRuleDuration), Duration(l))
			ok = false
			continue
		}
		if !rulesOK {
			continue
		}
		// An attestation may live as long as the colour its rule gives it
		// (a vaccination its 14d wait and 180d of green), or as long as
		// attestations.max_lifetime allows any kind; longer would only
		// widen what a stolen attestation is good for.
		if ri, reach := p.ruleReach(k); ri >= 0 && l > max(p.Attestations.MaxLifetime.D(), reach) {
			ps.add(f, "must be at most the longer of attestations.max_lifetime (%s) and rules[%d].after + rules[%d].for (%s), got %s",
				p.Attestations.MaxLifetime, ri, ri, Duration(reach), Duration(l))
			ok = false
		}
	}
	return ok
}

// ruleReach returns the index of the rule for kind k (-1 if none) and how
// long after the event it ends (after + for). The rules must be valid.
func (p *Policy) ruleReach(k attestation.Kind) (index int, reach time.Duration) {
	for i, r := range p.Rules {
		if r.Kind == k {
			return i, r.After.D() + r.For.D()
		}
	}
	return -1, 0
}

// longestLifetime returns the longest attestation lifetime and the field
// that sets it: attestations.max_lifetime when a kind takes that value (as
// every kind does in an older document), else the first kind's field.
func (p *Policy) longestLifetime() (time.Duration, string) {
	l := p.Attestations.Lifetimes.Longest()
	if l == p.Attestations.MaxLifetime.D() {
		return l, "attestations.max_lifetime"
	}
	for _, k := range attestation.Kinds {
		if p.Attestations.Lifetimes.Of(k) == l {
			return l, "attestations.lifetimes." + string(k)
		}
	}
	return l, "attestations.lifetimes"
}
