package policy

import (
	"bytes"
	"errors"
	"fmt"
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
			`invalid JSON at line 72, column 1: invalid character 'x' looking for beginning of value`},
		{"truncated", string(DefaultJSON()[:200]), `rules[1].colour: invalid JSON: unexpected end of input`},
		{"syntax error", edit(t, `"copies": 6,`, `"copies": 6,,`),
			`tokens: invalid JSON at line 44, column 17: invalid character ',' looking for beginning of object key string`},
		{"bad literal", edit(t, `"verifier_counting": false`, `"verifier_counting": fals`),
			`verifier_counting: invalid JSON at line 70, column 24: invalid character '\n' in literal false (expecting 'e')`},
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
