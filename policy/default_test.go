package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/default.json from DefaultJSON")

func TestDefaultValidates(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultIsFreshEachCall(t *testing.T) {
	a := Default()
	a.Rules[0].Colour = Green
	a.Name = "changed"
	if b := Default(); b.Rules[0].Colour != Red || b.Name != "city default" {
		t.Fatalf("Default shares state between calls: %+v", b)
	}
}

func TestDefaultJSONRoundTrip(t *testing.T) {
	a, b := DefaultJSON(), DefaultJSON()
	if !bytes.Equal(a, b) {
		t.Fatal("DefaultJSON differs between calls")
	}
	if !bytes.HasSuffix(a, []byte("}\n")) || !bytes.Contains(a, []byte("\n  \"rules\": [\n")) {
		t.Fatalf("DefaultJSON is not indented as expected:\n%s", a)
	}
	p, err := Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, Default()) {
		t.Fatalf("Parse(DefaultJSON()) != Default()")
	}
}

// The README quotes the default document: a change to it shows up here as
// a diff to review (go test ./policy -run Golden -update rewrites it).
func TestDefaultJSONGolden(t *testing.T) {
	const path = "testdata/default.json"
	if *update {
		if err := os.WriteFile(path, DefaultJSON(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := DefaultJSON(); !bytes.Equal(got, want) {
		t.Fatalf("DefaultJSON changed; review and run with -update\n got:\n%s\nwant:\n%s", got, want)
	}
}

// The values the brief and the README promise.
func TestDefaultValues(t *testing.T) {
	p := Default()
	dy := 24 * time.Hour
	type rule struct {
		kind        string
		colour      Colour
		after, for_ time.Duration
	}
	var got []rule
	for _, r := range p.Rules {
		got = append(got, rule{string(r.Kind), r.Colour, r.After.D(), r.For.D()})
	}
	want := []rule{
		{"test-positive", Red, 0, 10 * dy},
		{"isolation-order", Red, 0, 14 * dy},
		{"exposure-notice", Yellow, 0, 7 * dy},
		{"test-negative", Green, 0, 72 * time.Hour},
		{"vaccination", Green, 14 * dy, 180 * dy},
		{"recovery", Green, 0, 90 * dy},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rules = %+v", got)
	}
	if p.Version != 1 || p.Default != Yellow || p.HolderHint != HintNone || p.Counting ||
		p.Tokens.Copies != 6 || p.Tokens.Granularity.D() != time.Hour || p.Tokens.Horizon.D() != 7*dy ||
		p.Tokens.ClockSkew.D() != 5*time.Minute || p.Tokens.Lifetime != (Lifetimes{24 * h, 24 * h, 24 * h}) ||
		p.Renewal != (Renewal{7 * d, 2 * d}) ||
		p.Attestations != (Attestations{72 * h, KindLifetimes{3 * d, 10 * d, 194 * d, 90 * d, 7 * d, 14 * d}, 8}) ||
		p.Retention != (Retention{7 * d, 30 * d, 365 * d, 30 * d, 90 * d, 10 * m}) ||
		p.Keys != (Keys{30 * d, 7 * d}) || p.Bundle != (BundleTimes{24 * h, 7 * d}) {
		t.Fatalf("default values changed: %+v", p)
	}
	// Each kind's attestation may live exactly as long as its rule gives
	// it colour, no longer: the bound Validate enforces.
	for _, r := range p.Rules {
		if got := p.Attestations.Lifetimes.Of(r.Kind); got != r.After.D()+r.For.D() {
			t.Errorf("attestations.lifetimes.%s = %s, want after + for = %s", r.Kind, Duration(got), r.After+r.For)
		}
	}
}

func TestCanonical(t *testing.T) {
	p := Default()
	a, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Default().Canonical()
	if !bytes.Equal(a, b) {
		t.Fatal("Canonical is not stable")
	}
	if !json.Valid(a) || bytes.ContainsAny(a, "\n\t") || bytes.Contains(a, []byte(": ")) {
		t.Fatalf("Canonical is not compact JSON: %s", a)
	}
	const prefix = `{"version":1,"name":"city default","rules":[{"kind":"test-positive","colour":"red","for":"10d"},`
	if !bytes.HasPrefix(a, []byte(prefix)) {
		t.Fatalf("Canonical = %s", a)
	}
	q, err := Parse(a)
	if err != nil || !reflect.DeepEqual(p, q) {
		t.Fatalf("Parse(Canonical()) = %+v, %v", q, err)
	}
	// Any change in meaning changes the bytes.
	p.Tokens.Copies = 5
	c, _ := p.Canonical()
	if bytes.Equal(a, c) {
		t.Fatal("a changed policy has the same canonical form")
	}
	// Same meaning written differently: same bytes.
	doc := bytes.Replace(DefaultJSON(), []byte(`"for": "3d"`), []byte(`"for": "72h"`), 1)
	r, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if rc, _ := r.Canonical(); !bytes.Equal(rc, a) {
		t.Fatalf("equivalent documents have different canonical forms:\n%s\n%s", rc, a)
	}
}

func TestCanonicalRefusesInvalid(t *testing.T) {
	p := Default()
	p.Tokens.Copies = 0
	b, err := p.Canonical()
	if err == nil || b != nil || err.Error() != "tokens.copies: must be between 1 and 32, got 0" {
		t.Fatalf("Canonical of an invalid policy = %q, %v", b, err)
	}
}
