package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
)

const (
	h = Duration(time.Hour)
	m = Duration(time.Minute)
	d = Duration(24 * time.Hour)
)

func TestValidateDefault(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate(): %v", err)
	}
}

// Each case breaks one thing in the default and expects exactly one message.
func TestValidateMessages(t *testing.T) {
	cases := []struct {
		name   string
		change func(p *Policy)
		want   string
	}{
		{"version zero", func(p *Policy) { p.Version = 0 }, "version: must be at least 1, got 0"},
		{"version negative", func(p *Policy) { p.Version = -3 }, "version: must be at least 1, got -3"},
		{"name too long", func(p *Policy) { p.Name = strings.Repeat("n", MaxNameLen+1) },
			"name: must be at most 128 bytes, got 129"},
		{"name not UTF-8", func(p *Policy) { p.Name = "city\xff" }, "name: must be valid UTF-8"},
		{"no rules", func(p *Policy) { p.Rules = nil }, "rules: must have at least one rule"},
		{"empty rules", func(p *Policy) { p.Rules = []Rule{} }, "rules: must have at least one rule"},
		{"too many rules", func(p *Policy) { p.Rules = append(p.Rules, p.Rules[0]) },
			"rules: must have at most 6 rules (one per attestation kind), got 7"},
		{"unknown kind", func(p *Policy) { p.Rules[2].Kind = "rumour" },
			`rules[2].kind: must be one of test-negative, test-positive, vaccination, recovery, exposure-notice, isolation-order, got "rumour"`},
		{"missing kind", func(p *Policy) { p.Rules[0].Kind = "" },
			`rules[0].kind: must be one of test-negative, test-positive, vaccination, recovery, exposure-notice, isolation-order, got ""`},
		{"duplicate kind", func(p *Policy) { p.Rules[4].Kind = attestation.TestPositive },
			`rules[4].kind: "test-positive" already has a rule (rules[0]); one rule per kind`},
		{"missing colour", func(p *Policy) { p.Rules[1].Colour = 0 },
			"rules[1].colour: must be green, yellow or red, got none"},
		{"bad colour", func(p *Policy) { p.Rules[1].Colour = 9 },
			"rules[1].colour: must be green, yellow or red, got 9"},
		{"negative after", func(p *Policy) { p.Rules[4].After = -h },
			"rules[4].after: must not be negative, got -1h"},
		{"after too long", func(p *Policy) { p.Rules[4].After = 3651 * d },
			"rules[4].after: must be at most 3650d, got 3651d"},
		{"for zero", func(p *Policy) { p.Rules[2].For = 0 }, "rules[2].for: must be positive, got 0s"},
		{"for negative", func(p *Policy) { p.Rules[2].For = -90 * m }, "rules[2].for: must be positive, got -1h30m"},
		{"for too long", func(p *Policy) { p.Rules[2].For = 4000 * d },
			"rules[2].for: must be at most 3650d, got 4000d"},
		{"missing default colour", func(p *Policy) { p.Default = 0 },
			"default_colour: must be green, yellow or red, got none"},
		{"bad default colour", func(p *Policy) { p.Default = -1 },
			"default_colour: must be green, yellow or red, got -1"},
		{"granularity zero", func(p *Policy) { p.Tokens.Granularity = 0 },
			"tokens.granularity: must be positive, got 0s"},
		{"granularity sub-second", func(p *Policy) { p.Tokens.Granularity = Duration(1500 * time.Millisecond) },
			"tokens.granularity: must be a whole number of seconds, got 1.5s"},
		{"granularity not dividing a day", func(p *Policy) { p.Tokens.Granularity = 7 * h },
			"tokens.granularity: must divide 24h exactly, got 7h"},
		{"lifetime zero", func(p *Policy) { p.Tokens.Lifetime.Yellow = 0 },
			"tokens.lifetime.yellow: must be positive, got 0s"},
		{"lifetime not a multiple", func(p *Policy) { p.Tokens.Lifetime.Green = 90 * m },
			"tokens.lifetime.green: must be a multiple of tokens.granularity (1h), got 1h30m"},
		{"lifetime over horizon", func(p *Policy) { p.Tokens.Lifetime.Red = 8 * d },
			"tokens.lifetime.red: must be at most tokens.horizon (7d), got 8d"},
		{"lifetime makes too many windows", func(p *Policy) { p.Tokens.Lifetime.Red = 5 * h },
			"tokens.lifetime.red: must be long enough that a batch over tokens.horizon + renewal.overlap (9d) has at most 32 windows, got 5h (45 windows)"},
		{"lifetime makes too many windows with no overlap", func(p *Policy) { p.Renewal.Overlap = 0; p.Tokens.Lifetime.Red = 5 * h },
			"tokens.lifetime.red: must be long enough that a batch over tokens.horizon (7d) has at most 32 windows, got 5h (35 windows)"},
		{"copies zero", func(p *Policy) { p.Tokens.Copies = 0 }, "tokens.copies: must be between 1 and 32, got 0"},
		{"copies too many", func(p *Policy) { p.Tokens.Copies = 33 }, "tokens.copies: must be between 1 and 32, got 33"},
		{"horizon zero", func(p *Policy) { p.Tokens.Horizon = 0 }, "tokens.horizon: must be positive, got 0s"},
		{"horizon too long", func(p *Policy) { p.Tokens.Horizon = 32 * d },
			"tokens.horizon: must be at most 31d, got 32d"},
		{"skew negative", func(p *Policy) { p.Tokens.ClockSkew = -m },
			"tokens.clock_skew: must not be negative, got -1m"},
		{"skew too large", func(p *Policy) { p.Tokens.ClockSkew = 61 * m },
			"tokens.clock_skew: must be at most 1h, got 1h1m"},
		{"holder binding empty", func(p *Policy) { p.HolderHint = "" },
			`holder_binding: must be "none" or "hint", got ""`},
		{"holder binding unknown", func(p *Policy) { p.HolderHint = "name" },
			`holder_binding: must be "none" or "hint", got "name"`},
		{"max lifetime zero", func(p *Policy) { p.Attestations.MaxLifetime = 0 },
			"attestations.max_lifetime: must be positive, got 0s"},
		{"max per request zero", func(p *Policy) { p.Attestations.MaxPerRequest = 0 },
			"attestations.max_per_request: must be between 1 and 16, got 0"},
		{"max per request too many", func(p *Policy) { p.Attestations.MaxPerRequest = 17 },
			"attestations.max_per_request: must be between 1 and 16, got 17"},
		{"replay zero", func(p *Policy) { p.Retention.Replay = 0 }, "retention.replay: must be positive, got 0s"},
		{"replay shorter than the renewal period", func(p *Policy) { p.Retention.Replay = 24 * h },
			"retention.replay: must be at least renewal.period (7d), got 1d"},
		{"replay shorter than attestations live", func(p *Policy) { legacyLifetimes(p); p.Retention.Replay = 24 * h },
			"retention.replay: must be at least attestations.max_lifetime + 2*tokens.clock_skew (72h10m), got 1d"},
		{"replay misses the skew", func(p *Policy) { legacyLifetimes(p); p.Retention.Replay = 72 * h },
			"retention.replay: must be at least attestations.max_lifetime + 2*tokens.clock_skew (72h10m), got 3d"},
		{"replay shorter than the longest kind lives", func(p *Policy) {
			legacyLifetimes(p)
			p.Attestations.Lifetimes.Vaccination = 5 * d
			p.Retention.Replay = 4 * d
		}, "retention.replay: must be at least attestations.lifetimes.vaccination + 2*tokens.clock_skew (120h10m), got 4d"},
		{"renewal period zero", func(p *Policy) { p.Renewal.Period = 0 }, "renewal.period: must be positive, got 0s"},
		{"renewal period negative", func(p *Policy) { p.Renewal.Period = -d }, "renewal.period: must be positive, got -24h"},
		{"renewal period not whole hours", func(p *Policy) { p.Renewal.Period = 6*d + 30*m },
			"renewal.period: must be a whole number of hours, got 144h30m"},
		{"renewal period over the horizon", func(p *Policy) { p.Renewal.Period = 8 * d; p.Retention.Replay = 8 * d },
			"renewal.period: must be at most tokens.horizon (7d), got 8d"},
		{"renewal overlap negative", func(p *Policy) { p.Renewal.Overlap = -h }, "renewal.overlap: must not be negative, got -1h"},
		{"renewal overlap over the horizon", func(p *Policy) { p.Renewal.Overlap = 8 * d; p.Keys.Lifetime = 60 * d },
			"renewal.overlap: must be at most tokens.horizon (7d), got 8d"},
		{"kind lifetime zero", func(p *Policy) { p.Attestations.Lifetimes.Recovery = 0 },
			"attestations.lifetimes.recovery: must be positive, got 0s"},
		{"kind lifetime longer than its rule", func(p *Policy) { p.Attestations.Lifetimes.Vaccination = 195 * d },
			"attestations.lifetimes.vaccination: must be at most the longer of attestations.max_lifetime (3d) and rules[4].after + rules[4].for (194d), got 195d"},
		{"test lifetime longer than its rule", func(p *Policy) { p.Attestations.Lifetimes.TestNegative = 73 * h },
			"attestations.lifetimes.test-negative: must be at most the longer of attestations.max_lifetime (3d) and rules[3].after + rules[3].for (3d), got 73h"},
		{"kind lifetime without a rule too long", func(p *Policy) { p.Rules = p.Rules[:4]; p.Attestations.Lifetimes.Recovery = 3651 * d },
			"attestations.lifetimes.recovery: must be at most 3650d, got 3651d"},
		{"counts zero", func(p *Policy) { p.Retention.Counts = 0 }, "retention.counts: must be positive, got 0s"},
		{"audit negative", func(p *Policy) { p.Retention.Audit = -d }, "retention.audit: must be positive, got -24h"},
		{"retired keys zero", func(p *Policy) { p.Retention.RetiredKeys = 0 },
			"retention.retired_keys: must be positive, got 0s"},
		{"policy history zero", func(p *Policy) { p.Retention.PolicyHistory = 0 },
			"retention.policy_history: must be positive, got 0s"},
		{"sweep zero", func(p *Policy) { p.Retention.SweepInterval = 0 },
			"retention.sweep_interval: must be at least 1s, got 0s"},
		{"sweep sub-second", func(p *Policy) { p.Retention.SweepInterval = Duration(time.Millisecond) },
			"retention.sweep_interval: must be at least 1s, got 1ms"},
		{"sweep slower than shortest retention", func(p *Policy) { p.Retention.SweepInterval = 8 * d },
			"retention.sweep_interval: must be at most the shortest retention (retention.replay, 7d), got 8d"},
		{"sweep slower than counts", func(p *Policy) { p.Retention.Counts = 2 * h; p.Retention.SweepInterval = 3 * h },
			"retention.sweep_interval: must be at most the shortest retention (retention.counts, 2h), got 3h"},
		{"key lifetime zero", func(p *Policy) { p.Keys.Lifetime = 0 }, "keys.lifetime: must be positive, got 0s"},
		{"key rotation zero", func(p *Policy) { p.Keys.Rotation = 0 }, "keys.rotation: must be positive, got 0s"},
		{"key too short for a batch", func(p *Policy) { p.Keys.Lifetime = 10 * d },
			"keys.lifetime: must be at least max(keys.rotation, bundle.lifetime) + tokens.horizon + renewal.overlap (16d), got 10d"},
		{"key too short for a batch with no overlap", func(p *Policy) { p.Renewal.Overlap = 0; p.Keys.Lifetime = 10 * d },
			"keys.lifetime: must be at least max(keys.rotation, bundle.lifetime) + tokens.horizon (14d), got 10d"},
		{"key too short for its wait in bundles", func(p *Policy) { p.Keys.Rotation = d; p.Bundle.Lifetime = 20 * d; p.Keys.Lifetime = 21 * d },
			"keys.lifetime: must be at least max(keys.rotation, bundle.lifetime) + tokens.horizon + renewal.overlap (29d), got 21d"},
		{"bundle stale zero", func(p *Policy) { p.Bundle.StaleAfter = 0 },
			"bundle.stale_after: must be positive, got 0s"},
		{"bundle lifetime equal to stale", func(p *Policy) { p.Bundle.Lifetime = 24 * h },
			"bundle.lifetime: must be longer than bundle.stale_after (1d), got 1d"},
		{"bundle lifetime shorter", func(p *Policy) { p.Bundle.Lifetime = 12 * h },
			"bundle.lifetime: must be longer than bundle.stale_after (1d), got 12h"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Default()
			c.change(p)
			err := p.Validate()
			if err == nil {
				t.Fatalf("Validate accepted it")
			}
			if err.Error() != c.want {
				t.Fatalf("error\n got: %s\nwant: %s", err, c.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Errors) != 1 {
				t.Fatalf("want a *ValidationError with one field error, got %#v", err)
			}
		})
	}
}

// Edges that are allowed: the limits are inclusive where the messages say
// "at least" or "at most".
func TestValidateAcceptsEdges(t *testing.T) {
	cases := []struct {
		name   string
		change func(p *Policy)
	}{
		{"replay exactly max_lifetime + 2*skew", func(p *Policy) { legacyLifetimes(p); p.Retention.Replay = 72*h + 10*m }},
		{"replay with no skew", func(p *Policy) { legacyLifetimes(p); p.Tokens.ClockSkew = 0; p.Retention.Replay = 72 * h }},
		{"skew 1h", func(p *Policy) { legacyLifetimes(p); p.Tokens.ClockSkew = h; p.Retention.Replay = 74 * h }},
		{"replay exactly the renewal period", func(p *Policy) { p.Renewal.Period = 5 * d; p.Retention.Replay = 5 * d }},
		{"renewal period 1h", func(p *Policy) { p.Renewal.Period = h; p.Retention.Replay = h; p.Retention.SweepInterval = h }},
		{"renewal period equal to the horizon, no overlap", func(p *Policy) { p.Renewal.Overlap = 0 }},
		{"renewal overlap equal to the horizon", func(p *Policy) { p.Renewal.Overlap = 7 * d }},
		{"kind lifetime exactly its rule", func(p *Policy) { p.Attestations.Lifetimes.Recovery = 90 * d }},
		{"kind lifetime up to max_lifetime though its rule is shorter", func(p *Policy) {
			p.Rules[3].For = 48 * h
			p.Attestations.Lifetimes.TestNegative = 72 * h
		}},
		{"key lifetime exactly rotation + horizon + overlap", func(p *Policy) { p.Keys.Lifetime = 16 * d }},
		{"sweep equal to shortest retention", func(p *Policy) { p.Retention.SweepInterval = 7 * d }},
		{"sweep 1s", func(p *Policy) { p.Retention.SweepInterval = Duration(time.Second) }},
		{"copies 1 and 32", func(p *Policy) { p.Tokens.Copies = 1 }},
		{"copies 32", func(p *Policy) { p.Tokens.Copies = 32 }},
		{"max per request 16", func(p *Policy) { p.Attestations.MaxPerRequest = 16 }},
		{"horizon 31d", func(p *Policy) { p.Tokens.Horizon = 31 * d; p.Renewal.Overlap = 0; p.Keys.Lifetime = 38 * d }},
		{"lifetime equal to horizon", func(p *Policy) { p.Tokens.Lifetime.Green = 7 * d }},
		{"exactly 32 windows", func(p *Policy) {
			p.Tokens.Horizon = 31 * h
			p.Renewal = Renewal{Period: 31 * h, Overlap: 0}
			p.Tokens.Lifetime = Lifetimes{h, h, h}
		}},
		{"exactly 32 windows with overlap", func(p *Policy) {
			p.Tokens.Horizon = 29 * h
			p.Renewal = Renewal{Period: 29 * h, Overlap: 2 * h}
			p.Tokens.Lifetime = Lifetimes{h, h, h}
		}},
		{"granularity 1s", func(p *Policy) { p.Tokens.Granularity = Duration(time.Second) }},
		{"granularity 24h", func(p *Policy) { p.Tokens.Granularity = 24 * h }},
		{"one rule", func(p *Policy) { p.Rules = p.Rules[:1] }},
		{"no name", func(p *Policy) { p.Name = "" }},
		{"name at limit", func(p *Policy) { p.Name = strings.Repeat("n", MaxNameLen) }},
		{"rule durations at limit", func(p *Policy) { p.Rules[0].After = 3650 * d; p.Rules[0].For = 3650 * d }},
		{"hint on", func(p *Policy) { p.HolderHint = HintOn }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Default()
			c.change(p)
			if err := p.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateReportsEverything(t *testing.T) {
	p := Default()
	p.Version = 0
	p.Rules[2].For = 0
	p.Tokens.Lifetime.Green = 90 * m
	p.Renewal.Overlap = -h
	p.Attestations.Lifetimes.Recovery = 0
	p.Retention.Replay = 24 * h // not reported: the lifetimes it depends on are wrong
	p.Retention.Counts = 0
	err := p.Validate()
	want := "version: must be at least 1, got 0; " +
		"rules[2].for: must be positive, got 0s; " +
		"tokens.lifetime.green: must be a multiple of tokens.granularity (1h), got 1h30m; " +
		"renewal.overlap: must not be negative, got -1h; " +
		"attestations.lifetimes.recovery: must be positive, got 0s; " +
		"retention.counts: must be positive, got 0s"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got: %v\nwant: %s", err, want)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is %T", err)
	}
	fields := make([]string, len(ve.Errors))
	for i, f := range ve.Errors {
		fields[i] = f.Field
	}
	if got := strings.Join(fields, ","); got != "version,rules[2].for,tokens.lifetime.green,renewal.overlap,attestations.lifetimes.recovery,retention.counts" {
		t.Fatalf("fields = %s", got)
	}
}

// A zero policy lists every required field once, and relational checks
// stay quiet when a field they rely on is itself wrong.
func TestValidateZeroPolicy(t *testing.T) {
	var p Policy
	err := p.Validate()
	want := strings.Join([]string{
		"version: must be at least 1, got 0",
		"rules: must have at least one rule",
		"default_colour: must be green, yellow or red, got none",
		"tokens.granularity: must be positive, got 0s",
		"tokens.horizon: must be positive, got 0s",
		"tokens.lifetime.green: must be positive, got 0s",
		"tokens.lifetime.yellow: must be positive, got 0s",
		"tokens.lifetime.red: must be positive, got 0s",
		"tokens.copies: must be between 1 and 32, got 0",
		"renewal.period: must be positive, got 0s",
		`holder_binding: must be "none" or "hint", got ""`,
		"attestations.max_lifetime: must be positive, got 0s",
		"attestations.lifetimes.test-negative: must be positive, got 0s",
		"attestations.lifetimes.test-positive: must be positive, got 0s",
		"attestations.lifetimes.vaccination: must be positive, got 0s",
		"attestations.lifetimes.recovery: must be positive, got 0s",
		"attestations.lifetimes.exposure-notice: must be positive, got 0s",
		"attestations.lifetimes.isolation-order: must be positive, got 0s",
		"attestations.max_per_request: must be between 1 and 16, got 0",
		"retention.replay: must be positive, got 0s",
		"retention.counts: must be positive, got 0s",
		"retention.audit: must be positive, got 0s",
		"retention.retired_keys: must be positive, got 0s",
		"retention.policy_history: must be positive, got 0s",
		"retention.sweep_interval: must be at least 1s, got 0s",
		"keys.lifetime: must be positive, got 0s",
		"keys.rotation: must be positive, got 0s",
		"bundle.stale_after: must be positive, got 0s",
	}, "; ")
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got: %v\nwant: %s", err, want)
	}
}

func TestValidateNil(t *testing.T) {
	var p *Policy
	if err := p.Validate(); err == nil || err.Error() != "policy is missing" {
		t.Fatalf("got %v", err)
	}
}

func TestValidateHasNoSideEffects(t *testing.T) {
	for _, p := range []*Policy{Default(), {}, {Version: 1, Rules: []Rule{{Kind: "x"}}}} {
		before := clone(p)
		_ = p.Validate()
		if !reflect.DeepEqual(p, before) {
			t.Fatalf("Validate changed the policy:\n got %+v\nwant %+v", p, before)
		}
	}
}

func TestValidateDoesNotOverflow(t *testing.T) {
	// Sums of huge durations must saturate, not wrap into "valid".
	p := Default()
	p.Attestations.MaxLifetime = Duration(1<<63 - 1)
	p.Rules = p.Rules[:5]                                      // no recovery rule: its lifetime is bounded by MaxRuleDuration alone
	p.Attestations.Lifetimes.Recovery = 3650 * d               // so longest + 2*skew stays in range and the period binds
	p.Attestations.Lifetimes.Vaccination = Duration(1<<63 - 1) // allowed: max_lifetime is longer than the rule
	p.Keys.Rotation = Duration(1<<63 - 1)
	want := "attestations.lifetimes.vaccination: must be at most 3650d, got 2562047h47m16.854775807s; " +
		"keys.lifetime: must be at least max(keys.rotation, bundle.lifetime) + tokens.horizon + renewal.overlap (2562047h47m16.854775807s), got 30d"
	if err := p.Validate(); err == nil || err.Error() != want {
		t.Fatalf("error\n got: %v\nwant: %s", err, want)
	}
}

func clone(p *Policy) *Policy {
	q := *p
	q.Rules = append([]Rule(nil), p.Rules...)
	if p.Rules == nil {
		q.Rules = nil
	}
	return &q
}

// legacyLifetimes gives every kind attestations.max_lifetime, as Parse
// does for a document written before per-kind lifetimes.
func legacyLifetimes(p *Policy) {
	for _, k := range attestation.Kinds {
		*p.Attestations.Lifetimes.field(k) = p.Attestations.MaxLifetime
	}
}
