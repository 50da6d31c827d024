package policy

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func win(nb, exp string) Window { return Window{NotBefore: utc(nb), Expires: utc(exp)} }

func TestWindowsExamples(t *testing.T) {
	def := Default()
	sixHours := Default()
	sixHours.Tokens.Lifetime.Green = 6 * h
	sixHours.Tokens.Granularity = 15 * m
	sixHours.Renewal.Overlap = 0 // 9d of six-hour windows would be too many
	cases := []struct {
		name  string
		p     *Policy
		d     Decision
		now   string
		want  []Window
		label string
	}{
		{"days on the UTC grid, last cut at the hour", def,
			Decision{Colour: Green, Until: utc("2026-03-07T09:40:00Z")}, "2026-03-05T13:27:00Z",
			[]Window{
				win("2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"),
				win("2026-03-06T00:00:00Z", "2026-03-07T00:00:00Z"),
				win("2026-03-07T00:00:00Z", "2026-03-07T09:00:00Z"),
			}, ""},
		{"until on a grid line: no empty window", def,
			Decision{Colour: Red, Until: utc("2026-03-07T00:00:00Z")}, "2026-03-05T13:27:00Z",
			[]Window{
				win("2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"),
				win("2026-03-06T00:00:00Z", "2026-03-07T00:00:00Z"),
			}, ""},
		{"ends within the first window", def,
			Decision{Colour: Yellow, Until: utc("2026-03-05T15:59:59Z")}, "2026-03-05T13:27:00Z",
			[]Window{win("2026-03-05T00:00:00Z", "2026-03-05T15:00:00Z")}, ""},
		{"ends within the current granule: nothing", def,
			Decision{Colour: Green, Until: utc("2026-03-05T13:59:00Z")}, "2026-03-05T13:27:00Z",
			nil, ""},
		{"ends at the granule holding now: nothing", def,
			Decision{Colour: Green, Until: utc("2026-03-05T14:00:00Z")}, "2026-03-05T14:00:00Z",
			nil, ""},
		{"now exactly on a grid line", def,
			Decision{Colour: Green, Until: utc("2026-03-06T02:00:00Z")}, "2026-03-05T00:00:00Z",
			[]Window{
				win("2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"),
				win("2026-03-06T00:00:00Z", "2026-03-06T02:00:00Z"),
			}, ""},
		{"cut at the reach (horizon + overlap) even if until is later", def,
			Decision{Colour: Green, Until: utc("2026-04-01T00:00:00Z")}, "2026-03-05T13:27:00Z",
			[]Window{
				win("2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"),
				win("2026-03-06T00:00:00Z", "2026-03-07T00:00:00Z"),
				win("2026-03-07T00:00:00Z", "2026-03-08T00:00:00Z"),
				win("2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"),
				win("2026-03-09T00:00:00Z", "2026-03-10T00:00:00Z"),
				win("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z"),
				win("2026-03-11T00:00:00Z", "2026-03-12T00:00:00Z"),
				win("2026-03-12T00:00:00Z", "2026-03-13T00:00:00Z"),
				win("2026-03-13T00:00:00Z", "2026-03-14T00:00:00Z"),
				win("2026-03-14T00:00:00Z", "2026-03-14T13:00:00Z"),
			}, ""},
		{"six-hour windows, quarter-hour granularity", sixHours,
			Decision{Colour: Green, Until: utc("2026-03-06T01:10:00Z")}, "2026-03-05T13:27:00Z",
			[]Window{
				win("2026-03-05T12:00:00Z", "2026-03-05T18:00:00Z"),
				win("2026-03-05T18:00:00Z", "2026-03-06T00:00:00Z"),
				win("2026-03-06T00:00:00Z", "2026-03-06T01:00:00Z"),
			}, ""},
		{"before 1970 the grid still rounds down", def,
			Decision{Colour: Green, Until: utc("1969-12-31T05:30:00Z")}, "1969-12-30T22:10:00Z",
			[]Window{
				win("1969-12-30T00:00:00Z", "1969-12-31T00:00:00Z"),
				win("1969-12-31T00:00:00Z", "1969-12-31T05:00:00Z"),
			}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.p.Validate(); err != nil {
				t.Fatal(err)
			}
			got := c.p.Windows(c.d, utc(c.now))
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %v\nwant %v", got, c.want)
			}
		})
	}
}

// Property test over many random valid policies, decisions and times.
func TestWindowsProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	divisors := []time.Duration{time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute,
		time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 8 * time.Hour, 12 * time.Hour, 24 * time.Hour}
	checked, empty := 0, 0
	for i := 0; i < 20000; i++ {
		p := Default()
		g := divisors[rng.IntN(len(divisors))]
		p.Tokens.Granularity = Duration(g)
		p.Tokens.Horizon = Duration(time.Duration(1+rng.Int64N(int64(31*24*time.Hour/time.Second))) * time.Second)
		for _, c := range Colours {
			// A lifetime that is a multiple of G, at most the horizon, and
			// gives at most MaxWindows windows.
			hor := p.Tokens.Horizon.D()
			maxK := int64(hor / g)
			minK := int64((hor/(MaxWindows-1) + g - 1) / g)
			if maxK < 1 || minK > maxK {
				p.Tokens.Horizon = Duration(g)
				maxK, minK = 1, 1
			}
			minK = max(minK, 1)
			l := time.Duration(minK+rng.Int64N(maxK-minK+1)) * g
			switch c {
			case Green:
				p.Tokens.Lifetime.Green = Duration(l)
			case Yellow:
				p.Tokens.Lifetime.Yellow = Duration(l)
			case Red:
				p.Tokens.Lifetime.Red = Duration(l)
			}
		}
		p.Keys.Lifetime = 60 * d
		p.Renewal = Renewal{Period: Duration(max(p.Tokens.Horizon.D().Truncate(time.Hour), time.Hour)), Overlap: 0}
		if p.Tokens.Horizon.D() < time.Hour {
			p.Tokens.Horizon = Duration(time.Hour)
		}
		p.Retention.Replay = 31 * d
		if err := p.Validate(); err != nil {
			t.Fatalf("generated an invalid policy: %v", err)
		}
		// now anywhere from 1960 to 2100, with nanoseconds.
		nowT := time.Unix(-315619200+rng.Int64N(4417977600), rng.Int64N(1e9)).UTC()
		dec := Decision{
			Colour: Colours[rng.IntN(3)],
			From:   nowT,
			Until:  nowT.Add(time.Duration(rng.Int64N(int64(40 * 24 * time.Hour)))),
		}
		ws := p.Windows(dec, nowT)
		if err := checkWindows(p, dec, nowT, ws); err != nil {
			t.Fatalf("case %d: %v\npolicy tokens %+v\ndecision %+v now %v\nwindows %v", i, err, p.Tokens, dec, nowT, ws)
		}
		checked++
		if len(ws) == 0 {
			empty++
		}
	}
	if empty == checked || empty == 0 {
		t.Fatalf("generator is degenerate: %d of %d batches empty", empty, checked)
	}
}

// checkWindows asserts every property the Windows doc promises.
func checkWindows(p *Policy, dec Decision, now time.Time, ws []Window) error {
	l := p.Tokens.Lifetime.Of(dec.Colour)
	g := p.Tokens.Granularity.D()
	// End: Until, no later than the reach, rounded down to G.
	end := dec.Until
	if hz := now.Add(p.Reach()); hz.Before(end) {
		end = hz
	}
	end = time.Unix(floorTo(end.Unix(), int64(g/time.Second)), 0)
	if len(ws) == 0 {
		if end.After(now) {
			return fmt.Errorf("empty batch though End %v is after now", end)
		}
		return nil
	}
	// The batch runs exactly up to End: nothing is left out.
	if last := ws[len(ws)-1].Expires; !last.Equal(end) {
		return fmt.Errorf("batch stops at %v, not at End %v", last, end)
	}
	if len(ws) > MaxWindows {
		return fmt.Errorf("%d windows, more than %d", len(ws), MaxWindows)
	}
	if first := ws[0]; now.Before(first.NotBefore) || !now.Before(first.Expires) {
		return fmt.Errorf("first window %v does not hold now", first)
	}
	for i, w := range ws {
		for _, x := range []time.Time{w.NotBefore, w.Expires} {
			if x.UnixNano()%int64(g) != 0 {
				return fmt.Errorf("window %d: %v is not a multiple of %v", i, x, g)
			}
			if x.Location() != time.UTC {
				return fmt.Errorf("window %d: %v not in UTC", i, x)
			}
		}
		if w.NotBefore.UnixNano()%int64(l) != 0 {
			return fmt.Errorf("window %d starts off the %v grid", i, l)
		}
		if !w.Expires.After(w.NotBefore) {
			return fmt.Errorf("window %d is empty", i)
		}
		if w.Expires.Sub(w.NotBefore) > l {
			return fmt.Errorf("window %d is longer than %v", i, l)
		}
		if w.Expires.After(dec.Until) {
			return fmt.Errorf("window %d expires after the evidence (%v)", i, dec.Until)
		}
		if w.Expires.After(now.Add(p.Reach())) {
			return fmt.Errorf("window %d expires beyond the reach", i)
		}
		if i > 0 && !w.NotBefore.Equal(ws[i-1].Expires) {
			return fmt.Errorf("window %d does not follow window %d", i, i-1)
		}
	}
	return nil
}

// Invariant 4: tests sampled within the same granule give identical token
// times, so a token does not tell when its holder was tested.
func TestWindowsHideEventTime(t *testing.T) {
	p := Default()
	now := utc("2026-03-05T13:27:00Z")
	var first []Window
	for _, sampled := range []string{"2026-03-05T09:00:00Z", "2026-03-05T09:05:13Z", "2026-03-05T09:59:59Z"} {
		dec := p.Evaluate([]attestation.Evidence{ev(attestation.TestNegative, utc(sampled))}, now)
		ws := p.Windows(dec, now)
		if first == nil {
			first = ws
			continue
		}
		if !reflect.DeepEqual(ws, first) {
			t.Fatalf("sampled at %s: windows %v differ from %v", sampled, ws, first)
		}
	}
	if len(first) != 4 || !first[3].Expires.Equal(utc("2026-03-08T09:00:00Z")) {
		t.Fatalf("windows = %v", first)
	}
}

// A whole redemption: evaluate, then cut into windows; no window outlives
// the evidence (invariant 6) for any event time in the last ten days.
func TestEvaluateThenWindows(t *testing.T) {
	p := Default()
	now := utc("2026-03-05T13:27:00Z")
	for _, k := range attestation.Kinds {
		for back := time.Duration(0); back < 10*24*time.Hour; back += 17 * time.Minute {
			e := ev(k, now.Add(-back))
			dec := p.Evaluate([]attestation.Evidence{e}, now)
			ws := p.Windows(dec, now)
			if err := checkWindows(p, dec, now, ws); err != nil {
				t.Fatalf("%s %v ago: %v", k, back, err)
			}
		}
	}
}

func TestWindowsInvalid(t *testing.T) {
	now := utc("2026-03-05T13:27:00Z")
	dec := Decision{Colour: Green, From: now, Until: now.Add(48 * time.Hour)}
	cases := map[string]func(p *Policy){
		"no granularity":         func(p *Policy) { p.Tokens.Granularity = 0 },
		"sub-second granularity": func(p *Policy) { p.Tokens.Granularity = Duration(time.Millisecond) },
		"fractional seconds":     func(p *Policy) { p.Tokens.Granularity = Duration(1500 * time.Millisecond) },
		"no lifetime":            func(p *Policy) { p.Tokens.Lifetime.Green = 0 },
		"lifetime off the grid":  func(p *Policy) { p.Tokens.Lifetime.Green = 90 * m },
		"too many windows":       func(p *Policy) { p.Tokens.Lifetime.Green = Duration(time.Second) },
	}
	for name, change := range cases {
		p := Default()
		change(p)
		if ws := p.Windows(dec, now); ws != nil {
			t.Errorf("%s: got %v, want nil", name, ws)
		}
	}
	if ws := Default().Windows(Decision{Colour: 0, Until: dec.Until}, now); ws != nil {
		t.Errorf("colour 0: got %v", ws)
	}
}

func TestWindowsAllocatesOnce(t *testing.T) {
	p := Default()
	now := utc("2026-03-05T13:27:00Z")
	dec := Decision{Colour: Green, From: now, Until: now.Add(5 * 24 * time.Hour)}
	if n := testing.AllocsPerRun(100, func() { p.Windows(dec, now) }); n != 1 {
		t.Fatalf("Windows allocates %v times per call, want 1", n)
	}
}

func BenchmarkWindows(b *testing.B) {
	p := Default()
	now := utc("2026-03-05T13:27:00Z")
	dec := Decision{Colour: Green, From: now, Until: now.Add(7 * 24 * time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		p.Windows(dec, now)
	}
}
