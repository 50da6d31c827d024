package policy

import (
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
)

var now = time.Date(2026, 3, 10, 13, 27, 45, 0, time.UTC)

func ev(kind attestation.Kind, at time.Time) attestation.Evidence {
	return attestation.Evidence{Attester: "lab", Kind: kind, At: at, Expires: at.Add(72 * time.Hour), ID: "x"}
}

func ago(dur time.Duration) time.Time { return now.Add(-dur) }

func TestEvaluate(t *testing.T) {
	const hr = time.Hour
	const dy = 24 * hr
	// pending: the default with a red rule that starts two days after the
	// event, to see clipping by a more severe colour that is not active yet.
	pending := Default()
	pending.Rules[1] = Rule{Kind: attestation.IsolationOrder, Colour: Red, After: 2 * d, For: 5 * d}
	pending.Rules[2] = Rule{Kind: attestation.ExposureNotice, Colour: Yellow, After: 12 * h, For: 7 * d}
	pending.Attestations.Lifetimes.IsolationOrder = 7 * d // as long as its rule now gives colour

	cases := []struct {
		name   string
		p      *Policy
		ev     []attestation.Evidence
		colour Colour
		until  time.Time
	}{
		{"no evidence: default for its lifetime", nil, nil, Yellow, now.Add(24 * hr)},
		{"negative test: green until 72h after sampling", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(10*hr))}, Green, ago(10 * hr).Add(72 * hr)},
		{"rule starts at the event time (inclusive)", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, now)}, Green, now.Add(72 * hr)},
		{"rule ends exclusively", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(72*hr))}, Yellow, now.Add(24 * hr)},
		{"a nanosecond before the end it still applies", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(72*hr-1))}, Green, now.Add(1)},
		{"positive dominates negative", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)), ev(attestation.TestPositive, ago(2*dy))},
			Red, now.Add(8 * dy)}, // 10d - 2d = 8d left, within the 9d reach
		{"clipped at the reach (horizon + overlap)", nil,
			[]attestation.Evidence{ev(attestation.TestPositive, ago(hr))}, Red, now.Add(9 * dy)},
		{"red from the later-ending rule", nil,
			[]attestation.Evidence{ev(attestation.TestPositive, ago(9*dy)), ev(attestation.IsolationOrder, ago(10*dy))},
			Red, ago(10 * dy).Add(14 * dy)},
		{"exposure makes a negative test yellow", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)), ev(attestation.ExposureNotice, ago(3*dy))},
			Yellow, ago(3 * dy).Add(7 * dy)},
		{"vaccination not yet effective: default, not clipped by a later green", nil,
			[]attestation.Evidence{ev(attestation.Vaccination, ago(5*dy))}, Yellow, now.Add(24 * hr)},
		{"vaccination effective from 14d, clipped at the reach", nil,
			[]attestation.Evidence{ev(attestation.Vaccination, ago(20*dy))}, Green, now.Add(9 * dy)},
		{"vaccination effective exactly at After", nil,
			[]attestation.Evidence{ev(attestation.Vaccination, ago(14*dy))}, Green, now.Add(9 * dy)},
		{"latest green end wins", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)), ev(attestation.Recovery, ago(85*dy))},
			Green, ago(85 * dy).Add(90 * dy)},
		{"evidence of a kind without a rule is ignored", onlyRule(attestation.TestNegative),
			[]attestation.Evidence{ev(attestation.TestPositive, ago(hr))}, Yellow, now.Add(24 * hr)},
		{"green clipped where a red rule begins", pending,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)), ev(attestation.IsolationOrder, ago(10*hr))},
			Green, ago(10 * hr).Add(48 * hr)},
		{"default clipped where a red rule begins", pending,
			[]attestation.Evidence{ev(attestation.IsolationOrder, ago(47*hr))}, Yellow, ago(47 * hr).Add(48 * hr)},
		{"green clipped where a yellow rule begins", pending,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)), ev(attestation.ExposureNotice, ago(2*hr))},
			Green, ago(2 * hr).Add(12 * hr)},
		{"earliest of several pending more severe starts", pending,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)),
				ev(attestation.IsolationOrder, ago(40*hr)), ev(attestation.ExposureNotice, ago(2*hr))},
			Green, ago(40 * hr).Add(48 * hr)},
		{"yellow not clipped by a pending green", pending,
			[]attestation.Evidence{ev(attestation.ExposureNotice, ago(13*hr)), ev(attestation.Vaccination, ago(13*dy))},
			Yellow, ago(13 * hr).Add(12*hr + 7*dy)},
		{"green not clipped by a pending green", nil,
			[]attestation.Evidence{ev(attestation.TestNegative, ago(hr)), ev(attestation.Vaccination, ago(13*dy))},
			Green, ago(hr).Add(72 * hr)},
		{"red not clipped by a pending red", pending,
			[]attestation.Evidence{ev(attestation.TestPositive, ago(9*dy)), ev(attestation.IsolationOrder, ago(47*hr))},
			Red, ago(9 * dy).Add(10 * dy)},
		{"red not clipped by anything", pending,
			[]attestation.Evidence{ev(attestation.TestPositive, ago(9*dy)), ev(attestation.IsolationOrder, now)},
			Red, ago(9 * dy).Add(10 * dy)},
		{"future event: pending red clips the default", nil,
			[]attestation.Evidence{ev(attestation.TestPositive, now.Add(3*hr))}, Yellow, now.Add(3 * hr)},
		{"red default", withDefault(Red), nil, Red, now.Add(24 * hr)},
		{"green default, a red rule pending", func() *Policy {
			p := withDefault(Green)
			p.Rules = pending.Rules
			p.Attestations = pending.Attestations
			return p
		}(),
			[]attestation.Evidence{ev(attestation.IsolationOrder, ago(40*hr))}, Green, ago(40 * hr).Add(48 * hr)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.p
			if p == nil {
				p = Default()
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("test policy invalid: %v", err)
			}
			got := p.Evaluate(c.ev, now)
			want := Decision{Colour: c.colour, From: now, Until: c.until}
			if got.Colour != want.Colour || !got.From.Equal(want.From) || !got.Until.Equal(want.Until) {
				t.Fatalf("got %v %v..%v, want %v %v..%v", got.Colour, got.From, got.Until, want.Colour, want.From, want.Until)
			}
			if !got.Until.After(now) {
				t.Fatalf("Until %v is not after now", got.Until)
			}
		})
	}
}

func onlyRule(k attestation.Kind) *Policy {
	p := Default()
	for _, r := range p.Rules {
		if r.Kind == k {
			p.Rules = []Rule{r}
			return p
		}
	}
	panic("no rule for " + k)
}

func withDefault(c Colour) *Policy {
	p := Default()
	p.Default = c
	return p
}

func TestEvaluateOrderDoesNotMatter(t *testing.T) {
	evs := []attestation.Evidence{
		ev(attestation.TestNegative, ago(time.Hour)),
		ev(attestation.Recovery, ago(80*24*time.Hour)),
		ev(attestation.ExposureNotice, ago(6*24*time.Hour)),
		ev(attestation.Vaccination, ago(30*24*time.Hour)),
	}
	p := Default()
	want := p.Evaluate(evs, now)
	for i := range evs {
		rot := append(append([]attestation.Evidence(nil), evs[i:]...), evs[:i]...)
		if got := p.Evaluate(rot, now); got != want {
			t.Fatalf("rotation %d: got %+v, want %+v", i, got, want)
		}
	}
}

func TestEvaluateIsPure(t *testing.T) {
	p := Default()
	before := clone(p)
	evs := []attestation.Evidence{ev(attestation.TestNegative, ago(time.Hour))}
	evBefore := evs[0]
	a := p.Evaluate(evs, now)
	b := p.Evaluate(evs, now)
	if a != b || evs[0] != evBefore {
		t.Fatalf("Evaluate is not repeatable or changed its input")
	}
	if err := p.Validate(); err != nil || p.Rules[0] != before.Rules[0] {
		t.Fatalf("Evaluate changed the policy")
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	p := Default()
	evs := []attestation.Evidence{
		ev(attestation.TestNegative, ago(time.Hour)),
		ev(attestation.Vaccination, ago(30*24*time.Hour)),
	}
	if n := testing.AllocsPerRun(100, func() { p.Evaluate(evs, now) }); n != 0 {
		t.Fatalf("Evaluate allocates %v times per call, want 0", n)
	}
}

// Evaluate must not panic on a policy that was never validated.
func TestEvaluateInvalidPolicy(t *testing.T) {
	p := &Policy{Default: -5, Rules: []Rule{{Kind: attestation.TestNegative, Colour: 42}}}
	got := p.Evaluate([]attestation.Evidence{ev(attestation.TestNegative, now)}, now)
	if got.Colour != -5 || !got.Until.Equal(now) {
		t.Fatalf("got %+v", got)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	p := Default()
	evs := []attestation.Evidence{
		ev(attestation.TestNegative, ago(time.Hour)),
		ev(attestation.Vaccination, ago(30*24*time.Hour)),
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(evs, now)
	}
}
