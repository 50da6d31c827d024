package policy

import (
	"time"

	"github.com/healthcode/healthcode/attestation"
)

// Evaluate decides the colour that evidence earns at now, and until when.
// It is pure and does not allocate: it runs on every redemption.
//
// A rule applies to evidence e of the rule's kind during
// [e.At+After, e.At+After+For): it is active at now if that window contains
// now, and pending if the window starts after now.
//
//   - Colour is the most severe colour of the active rules (red over yellow
//     over green). If no rule is active, it is the policy's default colour.
//   - Until is the latest end of the active rules of that colour (the
//     evidence window; for the default colour, now + its token lifetime),
//     then cut to the earliest start of a pending rule of a more severe
//     colour (so a green test never outlasts a red order that begins
//     tomorrow; this applies to the default colour too), then cut to
//     now + Reach (tokens.horizon + renewal.overlap).
//   - From is now.
//
// Evidence of a kind no rule names is ignored. Until is always after now
// for a valid policy.
func (p *Policy) Evaluate(ev []attestation.Evidence, now time.Time) Decision {
	var (
		best    Colour
		until   time.Time
		pending [Red + 1]time.Time // earliest pending start per colour; zero if none
	)
	for i := range ev {
		e := &ev[i]
		for j := range p.Rules {
			r := &p.Rules[j]
			if r.Kind != e.Kind || !r.Colour.Valid() {
				continue
			}
			// Two Adds, not one of After+For, so no duration sum can overflow.
			start := e.At.Add(r.After.D())
			end := start.Add(r.For.D())
			switch {
			case now.Before(start):
				if pending[r.Colour].IsZero() || start.Before(pending[r.Colour]) {
					pending[r.Colour] = start
				}
			case !now.Before(end):
				// over
			case r.Colour > best:
				best, until = r.Colour, end
			case r.Colour == best && end.After(until):
				until = end
			}
		}
	}
	d := Decision{Colour: best, From: now}
	if best == 0 {
		d.Colour = p.Default
		until = now.Add(p.Tokens.Lifetime.Of(p.Default))
	}
	for c := max(d.Colour+1, Green); c <= Red; c++ {
		if s := pending[c]; !s.IsZero() && s.Before(until) {
			until = s
		}
	}
	if h := now.Add(p.Reach()); h.Before(until) {
		until = h
	}
	d.Until = until
	return d
}

// EvidenceEnd is when evidence e stops earning any colour under the
// policy: the latest end of a rule for its kind, or its expiry if that is
// sooner (after it, e can no longer be redeemed or renewed). For a kind no
// rule names, it is the expiry. The wallet keeps an attestation until then.
func (p *Policy) EvidenceEnd(e attestation.Evidence) time.Time {
	var end time.Time
	for j := range p.Rules {
		r := &p.Rules[j]
		if r.Kind != e.Kind {
			continue
		}
		if t := e.At.Add(r.After.D()).Add(r.For.D()); t.After(end) {
			end = t
		}
	}
	if end.IsZero() || e.Expires.Before(end) {
		return e.Expires
	}
	return end
}

// Windows cuts a decision into the validity windows of a batch. It is pure
// and makes one allocation, the result.
//
// With L the token lifetime of d's colour and G the granularity, windows sit
// on a fixed grid: [k*L, (k+1)*L) counted from the Unix epoch in UTC. Let
// End be d.Until rounded down to a multiple of G (and no later than
// now + Reach). The batch is every grid window from the one holding
// now up to End, each ending at the earlier of its grid end and End. So:
//
//   - every NotBefore and Expires is a multiple of G, and the grid is the
//     same for everyone, so token times say nothing about when a test was
//     taken (invariant 4);
//   - no window is longer than L, and none expires after d.Until: a token
//     never outlives the evidence (invariant 6);
//   - the windows are contiguous and ordered, and the first holds now
//     (its NotBefore may be in the past; it is a grid point).
//
// The result is empty when End is not after now, that is, when the evidence
// ends within the current granule: there is nothing honest to issue. It is
// nil too for a policy that does not validate.
func (p *Policy) Windows(d Decision, now time.Time) []Window {
	l := p.Tokens.Lifetime.Of(d.Colour)
	g := p.Tokens.Granularity.D()
	if g < time.Second || g%time.Second != 0 || l <= 0 || l%g != 0 {
		return nil
	}
	// Whole seconds suffice: G and L are whole seconds.
	ls, gs := int64(l/time.Second), int64(g/time.Second)
	nowS := now.Unix() // rounds down, also before 1970
	end := floorTo(d.Until.Unix(), gs)
	if h := floorTo(now.Add(p.Reach()).Unix(), gs); h < end {
		end = h
	}
	if end <= nowS { // the first window would expire by now
		return nil
	}
	start := floorTo(nowS, ls)
	n := (end - start + ls - 1) / ls
	if n > MaxWindows {
		return nil // only an invalid policy gets here
	}
	ws := make([]Window, 0, n)
	for nb := start; nb < end; nb += ls {
		ws = append(ws, Window{
			NotBefore: time.Unix(nb, 0).UTC(),
			Expires:   time.Unix(min(nb+ls, end), 0).UTC(),
		})
	}
	return ws
}

// floorTo rounds x down to a multiple of m (m > 0), towards minus infinity.
func floorTo(x, m int64) int64 {
	r := x % m
	if r < 0 {
		r += m
	}
	return x - r
}
