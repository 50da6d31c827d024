package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// edit returns the default document with old replaced by new, failing the
// test if old is not in it exactly once, so a case cannot silently test the
// unchanged default.
func edit(t *testing.T, old, new string) string {
	t.Helper()
	doc := string(DefaultJSON())
	if n := strings.Count(doc, old); n != 1 {
		t.Fatalf("edit: %q occurs %d times in the default document", old, n)
	}
	return strings.Replace(doc, old, new, 1)
}

func TestParseDefault(t *testing.T) {
	p, err := Parse(DefaultJSON())
	if err != nil {
		t.Fatalf("Parse(DefaultJSON()): %v", err)
	}
	if !reflect.DeepEqual(p, Default()) {
		t.Fatalf("Parse(DefaultJSON()) = %+v, want Default() = %+v", p, Default())
	}
}

func TestParseAcceptsEquivalentForms(t *testing.T) {
	// Field order, whitespace and duration spelling are free; the values
	// are what count.
	doc := edit(t, `"for": "3d"`, `"for": "72h"`)
	doc = strings.ReplaceAll(doc, "\n", "\r\n\t ")
	doc = strings.Replace(doc, `"copies": 6,`, ``, 1)
	doc = strings.Replace(doc, `"granularity": "1h",`, `"granularity": "60m", "copies": 6,`, 1)
	p, err := Parse([]byte(doc + "\n\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !reflect.DeepEqual(p, Default()) {
		t.Fatalf("got %+v, want Default()", p)
	}
}

func TestParseOmittedOptionalFields(t *testing.T) {
	// name and after may be left out; everything else is checked by
	// Validate, which fills in nothing.
	doc := edit(t, `"name": "city default",`, ``)
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.Name != "" || p.Rules[0].After != 0 {
		t.Fatalf("name %q after %v, want empty and 0", p.Name, p.Rules[0].After)
	}
}

func TestParseErrors(t *testing.T) {
	big := edit(t, `"name": "city default"`, `"name": "`+strings.Repeat("x", MaxSize)+`"`)
	cases := []struct {
		name, doc, want string
	}{
		{"empty", ``, `policy is empty`},
		{"whitespace", " \n\t", `policy is empty`},
		{"array", `[]`, `policy must be a JSON object, got an array`},
		{"string", `"policy"`, `policy must be a JSON object, got a string`},
		{"null", `null`, `policy must be a JSON object, got null`},
		{"too big", big, fmt.Sprintf("policy is %d bytes, more than the limit of 65536", len(big))},
		{"unknown top-level field", edit(t, `"version": 1,`, `"version": 1, "colour_rules": [],`),
			`colour_rules: unknown field`},
		{"unknown nested field", edit(t, `"red": "1d"`, `"red": "1d", "purple": "1d"`),
			`tokens.lifetime.purple: unknown field`},
		{"unknown field in a rule", edit(t, `"colour": "yellow",`, `"colour": "yellow", "colr": "red",`),
			`rules[2].colr: unknown field`},
		{"names are case-sensitive", edit(t, `"version": 1`, `"Version": 1`),
			`Version: unknown field`},
		{"long unknown name is cut", edit(t, `"version": 1,`, `"version": 1, "`+strings.Repeat("a", 40)+`": 1,`),
			strings.Repeat("a", 32) + `…: unknown field`},
		{"duplicate field", edit(t, `"copies": 6,`, `"copies": 6, "copies": 60,`),
			`tokens.copies: duplicate field`},
		{"null field", edit(t, `"version": 1`, `"version": null`), `version: must not be null`},
		{"null rules", edit(t, `"retention": {`, `"retention": null, "x": {`), `retention: must not be null`},
		{"integer as string", edit(t, `"copies": 6`, `"copies": "6"`),
			`tokens.copies: must be an integer, got a string`},
		{"fraction", edit(t, `"copies": 6`, `"copies": 6.5`), `tokens.copies: must be an integer, got 6.5`},
		{"exponent", edit(t, `"version": 1`, `"version": 1e0`), `version: must be an integer, got 1e0`},
		{"integer out of range", edit(t, `"version": 1`, `"version": 99999999999`),
			`version: is out of range, got 99999999999`},
		{"bad duration", edit(t, `"for": "10d"`, `"for": "10 days"`),
			`rules[0].for: must be a duration such as "72h" or "30d", got "10 days"`},
		{"fractional days", edit(t, `"for": "10d"`, `"for": "1.5d"`),
			`rules[0].for: must be a duration such as "72h" or "30d", got "1.5d"`},
		{"duration as number", edit(t, `"granularity": "1h"`, `"granularity": 3600`),
			`tokens.granularity: must be a duration such as "72h" or "30d", got a number`},
		{"overflowing days", edit(t, `"audit": "365d"`, `"audit": "106752d"`),
			`retention.audit: must be a duration such as "72h" or "30d", got "106752d"`},
		{"bad colour", edit(t, `"default_colour": "yellow"`, `"default_colour": "purple"`),
			`default_colour: must be green, yellow or red, got "purple"`},
		{"colour case", edit(t, `"colour": "yellow"`, `"colour": "Yellow"`),
			`rules[2].colour: must be green, yellow or red, got "Yellow"`},
		{"colour as number", edit(t, `"colour": "yellow"`, `"colour": 2`),
			`rules[2].colour: must be green, yellow or red, got a number`},
		{"kind as number", edit(t, `"kind": "recovery"`, `"kind": 6`),
			`rules[5].kind: must be a string, got a number`},
		{"bool as string", edit(t, `"verifier_counting": false`, `"verifier_counting": "no"`),
			`verifier_counting: must be true or false, got a string`},
		{"rules as object", edit(t, `"rules": [`, `"rules": {"x": [`), `rules: must be an array, got an object`},
		{"section as number", edit(t, `"keys": {`, `"keys": 5, "x": {`), `keys: must be an object, got a number`},
		{"rule as array", edit(t, `"rules": [`, `"rules": [[],`), `rules[0]: must be an object, got an array`},
		{"trailing document", string(DefaultJSON()) + `{}`, `unexpected data after the policy document`},
		{"trailing garbage", string(DefaultJSON()) + `x`,
			`invalid JSON at line 84, column 1: invalid character 'x' looking for beginning of value`},
		{"truncated", string(DefaultJSON()[:200]), `rules[1].colour: invalid JSON: unexpected end of input`},
		{"syntax error", edit(t, `"copies": 6,`, `"copies": 6,,`),
			`tokens: invalid JSON at line 44, column 17: invalid character ',' looking for beginning of object key string`},
		{"bad literal", edit(t, `"verifier_counting": false`, `"verifier_counting": fals`),
			`verifier_counting: invalid JSON at line 82, column 24: invalid character '\n' in literal false (expecting 'e')`},
		{"then Validate", edit(t, `"version": 1`, `"version": 0`), `version: must be at least 1, got 0`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", p)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with the error")
			}
			if err.Error() != c.want {
				t.Errorf("error\n got: %s\nwant: %s", err, c.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("error is %T, want *ValidationError", err)
			}
		})
	}
}

func TestParseErrorFields(t *testing.T) {
	// Callers (the admin API) return the field and reason separately.
	_, err := Parse([]byte(edit(t, `"red": "1d"`, `"red": "1d", "purple": "1d"`)))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is %T, want *ValidationError", err)
	}
	want := []FieldError{{Field: "tokens.lifetime.purple", Reason: "unknown field"}}
	if !reflect.DeepEqual(ve.Errors, want) {
		t.Fatalf("errors = %+v, want %+v", ve.Errors, want)
	}
}

func TestParseSizeLimitIsInclusive(t *testing.T) {
	doc := DefaultJSON()
	pad := bytes.Repeat([]byte(" "), MaxSize-len(doc))
	if _, err := Parse(append(doc, pad...)); err != nil {
		t.Fatalf("a document of exactly MaxSize bytes: %v", err)
	}
	if _, err := Parse(append(append(doc, pad...), ' ')); err == nil {
		t.Fatalf("a document of MaxSize+1 bytes was accepted")
	}
}

func TestParseEveryFieldIsDecoded(t *testing.T) {
	// A field of a type the walker does not handle would fail here.
	p := Default()
	p.Counting = true
	p.HolderHint = HintOn
	p.Name = "Ünïcode <name> & \"quotes\""
	p.Rules[0].After = Duration(90 * 60e9)
	b, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Canonical()): %v\n%s", err, b)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip changed the policy:\n got %+v\nwant %+v", q, p)
	}
}

// A document from release 0 (the default then, before renewal and per-kind
// lifetimes) still loads and means what it meant: every kind lives
// max_lifetime, the renewal period is the horizon, and the overlap is the
// default because the document leaves room for it.
func TestParseRelease0Document(t *testing.T) {
	doc, err := os.ReadFile("testdata/release0.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse(release0.json): %v", err)
	}
	if p.Renewal != (Renewal{Period: 7 * d, Overlap: 2 * d}) {
		t.Errorf("renewal = %+v, want period 7d, overlap 2d", p.Renewal)
	}
	if want := (KindLifetimes{3 * d, 3 * d, 3 * d, 3 * d, 3 * d, 3 * d}); p.Attestations.Lifetimes != want {
		t.Errorf("lifetimes = %+v, want 3d for every kind", p.Attestations.Lifetimes)
	}
	if p.Retention.Replay != 4*d || p.Attestations.MaxLifetime != 3*d {
		t.Errorf("an old field changed: %+v", p)
	}
	// Stored again, it is a complete document that reads back the same.
	c, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(c)
	if err != nil || !reflect.DeepEqual(p, q) {
		t.Fatalf("Parse(Canonical()) = %+v, %v", q, err)
	}
	if !bytes.Contains(c, []byte(`"renewal":{"period":"7d","overlap":"2d"}`)) {
		t.Errorf("canonical form lacks the filled-in renewal: %s", c)
	}
}

// The overlap given to an older document never breaks a check it passed:
// it shrinks to what the key lifetime and the window count leave room for.
func TestParseOlderDocumentOverlapFits(t *testing.T) {
	base, err := os.ReadFile("testdata/release0.json")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		old, nw string
		overlap Duration
	}{
		{"room for all of it", `"lifetime": "30d",`, `"lifetime": "16d",`, 2 * d},
		{"key lifetime leaves a day", `"lifetime": "30d",`, `"lifetime": "15d",`, d},
		{"key lifetime at the old minimum", `"lifetime": "30d",`, `"lifetime": "14d",`, 0},
		{"window count at the limit", `"horizon": "7d",`, `"horizon": "31h",`, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(string(base), c.old, c.nw, 1)
			if c.name == "window count at the limit" {
				doc = strings.NewReplacer(`"green": "1d"`, `"green": "1h"`, `"yellow": "1d"`, `"yellow": "1h"`,
					`"red": "1d"`, `"red": "1h"`).Replace(doc)
			}
			if doc == string(base) {
				t.Fatal("edit changed nothing")
			}
			p, err := Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if p.Renewal.Overlap != c.overlap || p.Renewal.Period != p.Tokens.Horizon {
				t.Fatalf("renewal = %+v, want overlap %s and period %s", p.Renewal, c.overlap, p.Tokens.Horizon)
			}
		})
	}
}

// Members of the new objects may be left out one by one too.
func TestParsePartialNewFields(t *testing.T) {
	doc := edit(t, `"overlap": "2d"`, `"period": "3d"`)
	doc = strings.Replace(doc, `"period": "7d",`, ``, 1) // renewal now holds only period 3d
	doc = strings.Replace(doc, `"test-negative": "3d",`, ``, 1)
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if p.Renewal != (Renewal{Period: 3 * d, Overlap: 2 * d}) {
		t.Errorf("renewal = %+v", p.Renewal)
	}
	if p.Attestations.Lifetimes.TestNegative != p.Attestations.MaxLifetime || p.Attestations.Lifetimes.Vaccination != 194*d {
		t.Errorf("lifetimes = %+v", p.Attestations.Lifetimes)
	}
	// A value written out is never replaced, and an explicit zero is an error.
	if _, err := Parse([]byte(edit(t, `"overlap": "2d"`, `"overlap": "-1h"`))); err == nil ||
		err.Error() != "renewal.overlap: must not be negative, got -1h" {
		t.Errorf("negative overlap: %v", err)
	}
	if _, err := Parse([]byte(edit(t, `"vaccination": "194d"`, `"vaccination": "0s"`))); err == nil ||
		err.Error() != "attestations.lifetimes.vaccination: must be positive, got 0s" {
		t.Errorf("zero lifetime: %v", err)
	}
	if _, err := Parse([]byte(edit(t, `"recovery": "90d",`, `"recovery": "90d", "Recovery": "90d",`))); err == nil ||
		err.Error() != "attestations.lifetimes.Recovery: unknown field" {
		t.Errorf("case-folded kind: %v", err)
	}
}
