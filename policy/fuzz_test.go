package policy

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
)

// FuzzParse: Parse never panics; a policy it accepts re-encodes and parses
// back to an equal policy with the same canonical bytes, and Evaluate and
// Windows keep their promises under it.
func FuzzParse(f *testing.F) {
	f.Add(DefaultJSON())
	if c, err := Default().Canonical(); err == nil {
		f.Add(c)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"rules":[{"kind":"test-negative","colour":"green","for":"90m"}]}`))
	f.Add(bytes.Replace(DefaultJSON(), []byte(`"7d"`), []byte(`"31d"`), 1))
	f.Add(bytes.Replace(DefaultJSON(), []byte(`"granularity": "1h"`), []byte(`"granularity": "15m"`), 1))
	f.Add([]byte(`{"rules":[{"kind":"x","kind":"y"}],"tokens":{"lifetime":null}}`))
	f.Add([]byte(`[1,2,{"a":"\u0000"}] trailing`))

	evidence := []attestation.Evidence{}
	base := time.Date(2026, 3, 5, 13, 27, 0, 0, time.UTC)
	for i, k := range attestation.Kinds {
		evidence = append(evidence, ev(k, base.Add(-time.Duration(i*37)*time.Hour)))
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a policy and an error")
			}
			if _, ok := err.(*ValidationError); !ok {
				t.Fatalf("error is %T, want *ValidationError", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		c, err := p.Canonical()
		if err != nil {
			t.Fatalf("accepted policy has no canonical form: %v", err)
		}
		q, err := Parse(c)
		if err != nil {
			t.Fatalf("Parse(Canonical()) failed: %v\n%s", err, c)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the policy:\n%+v\n%+v", p, q)
		}
		if c2, _ := q.Canonical(); !bytes.Equal(c, c2) {
			t.Fatalf("canonical form not stable:\n%s\n%s", c, c2)
		}
		for _, n := range []int{0, 1, 3, len(evidence)} {
			now := base.Add(time.Duration(n) * 7 * time.Hour)
			dec := p.Evaluate(evidence[:n], now)
			if !dec.Colour.Valid() || !dec.Until.After(now) || dec.Until.After(now.Add(p.Reach())) {
				t.Fatalf("decision %+v at %v", dec, now)
			}
			if err := checkWindows(p, dec, now, p.Windows(dec, now)); err != nil {
				t.Fatalf("windows: %v", err)
			}
		}
	})
}

// FuzzValidate explores the numeric space that FuzzParse rarely reaches:
// Validate never panics, and whatever it accepts keeps Evaluate's and
// Windows' promises and survives the canonical round trip.
func FuzzValidate(f *testing.F) {
	p0 := Default()
	f.Add(int64(p0.Tokens.Granularity), int64(p0.Tokens.Lifetime.Green), int64(p0.Tokens.Horizon),
		int64(p0.Rules[3].After), int64(p0.Rules[3].For), int64(p0.Tokens.ClockSkew), int64(5*time.Hour), int64(0))
	f.Add(int64(time.Second), int64(time.Hour), int64(31*time.Hour), int64(0), int64(time.Second), int64(0), int64(1), int64(-1))
	f.Add(int64(7*time.Hour), int64(-1), int64(1<<62), int64(-1<<63), int64(1<<63-1), int64(time.Hour), int64(1<<40), int64(1<<60))
	f.Fuzz(func(t *testing.T, g, l, hz, after, dur, skew, back, nowOff int64) {
		p := Default()
		p.Tokens.Granularity = Duration(g)
		p.Tokens.Lifetime.Green = Duration(l)
		p.Tokens.Horizon = Duration(hz)
		p.Rules[3].After = Duration(after) // test-negative, green
		p.Rules[3].For = Duration(dur)
		p.Tokens.ClockSkew = Duration(skew)
		// The renewal period follows the horizon, as in a document that
		// leaves it out, so that short horizons are explored too.
		p.Renewal.Period = Duration(max(p.Tokens.Horizon.D().Truncate(time.Hour), time.Hour))
		p.Renewal.Overlap = 0
		p.Attestations.Lifetimes.TestNegative = Duration(min(max(after+dur, 1), int64(72*time.Hour)))
		if p.Validate() != nil {
			return
		}
		c, err := p.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		if q, err := Parse(c); err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip: %v\n%s", err, c)
		}
		// now within a few centuries of 1970; evidence back before it.
		now := time.Unix(nowOff%(1<<33), 0).UTC()
		e := ev(attestation.TestNegative, now.Add(-time.Duration(back%int64(4000*24*time.Hour))))
		dec := p.Evaluate([]attestation.Evidence{e}, now)
		if !dec.Colour.Valid() || !dec.Until.After(now) {
			t.Fatalf("decision %+v at %v", dec, now)
		}
		if err := checkWindows(p, dec, now, p.Windows(dec, now)); err != nil {
			t.Fatalf("windows: %v (decision %+v, tokens %+v)", err, dec, p.Tokens)
		}
	})
}
