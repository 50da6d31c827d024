package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/clip"
)

// MaxSize bounds a policy document. The default is under 2 KiB; the bound
// keeps a hostile or mistaken upload from costing memory or time.
const MaxSize = 64 << 10

// Parse reads a policy document strictly and validates it. It refuses input
// over MaxSize, anything but one JSON object, unknown or duplicate fields
// (names match exactly, not case-insensitively as encoding/json would),
// nulls, values of the wrong type and trailing data; every error names the
// field path ("rules[1].colour"). On success the policy has passed
// Validate. Every error is a *ValidationError.
//
// Fields added after release 0 may be left out, so that a stored policy
// and an operator's file from then still load, and mean what they meant:
//   - renewal.period: tokens.horizon (what a batch covered);
//   - renewal.overlap: DefaultOverlap (2d), or less if the document's key
//     lifetime or window count leaves no room for it;
//   - attestations.lifetimes.<kind>: attestations.max_lifetime, the one
//     bound every kind had.
//
// Parse fills these in before Validate; Validate itself fills in nothing.
func Parse(b []byte) (*Policy, error) {
	if len(b) > MaxSize {
		return nil, fieldErr("", fmt.Sprintf("policy is %d bytes, more than the limit of %d", len(b), MaxSize))
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fieldErr("", "policy is empty")
	}
	d := decoder{in: b, dec: json.NewDecoder(bytes.NewReader(b)), absent: map[string]bool{}}
	d.dec.UseNumber()
	var p Policy
	if err := d.value(reflect.ValueOf(&p).Elem(), ""); err != nil {
		return nil, err
	}
	switch _, err := d.dec.Token(); {
	case err == io.EOF:
	case err != nil:
		return nil, d.syntax(err, "")
	default:
		return nil, fieldErr("", "unexpected data after the policy document")
	}
	p.fillLaterFields(d.absent)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Canonical is the policy's stable encoding, for storage and hashing: compact
// JSON, fields in declaration order, rules in the document's order,
// durations in Duration's form. Equal policies give equal bytes, and Parse
// reads the bytes back to an equal policy. A policy that does not validate
// has no canonical form, so nothing invalid is stored or hashed.
func (p *Policy) Canonical() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

var (
	durationType = reflect.TypeFor[Duration]()
	colourType   = reflect.TypeFor[Colour]()
)

// decoder walks the JSON token stream along the shape of the destination,
// so it can name the path of whatever is wrong. encoding/json alone reports
// unknown fields without their path, custom-type errors without any field,
// and silently accepts duplicate keys and case-insensitive names.
type decoder struct {
	in     []byte
	dec    *json.Decoder
	absent map[string]bool // paths of struct fields the document left out
}

func (d *decoder) value(v reflect.Value, path string) error {
	tok, err := d.dec.Token()
	if err != nil {
		return d.syntax(err, path)
	}
	if tok == nil {
		if path == "" {
			return fieldErr("", "policy must be a JSON object, got null")
		}
		return fieldErr(path, "must not be null")
	}
	switch v.Type() {
	case durationType:
		s, ok := tok.(string)
		if !ok {
			return fieldErr(path, `must be a duration such as "72h" or "30d", got `+jsonType(tok))
		}
		dur, err := ParseDuration(s)
		if err != nil {
			return fieldErr(path, `must be a duration such as "72h" or "30d", got `+quote(s))
		}
		v.SetInt(int64(dur))
		return nil
	case colourType:
		s, ok := tok.(string)
		if !ok {
			return fieldErr(path, "must be green, yellow or red, got "+jsonType(tok))
		}
		c, err := ParseColour(s)
		if err != nil {
			return fieldErr(path, "must be green, yellow or red, got "+quote(s))
		}
		v.SetInt(int64(c))
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if tok != json.Delim('{') {
			if path == "" {
				return fieldErr("", "policy must be a JSON object, got "+jsonType(tok))
			}
			return fieldErr(path, "must be an object, got "+jsonType(tok))
		}
		return d.object(v, path)
	case reflect.Slice:
		if tok != json.Delim('[') {
			return fieldErr(path, "must be an array, got "+jsonType(tok))
		}
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		for i := 0; d.dec.More(); i++ {
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
			if err := d.value(v.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		return d.closing(path)
	case reflect.String:
		s, ok := tok.(string)
		if !ok {
			return fieldErr(path, "must be a string, got "+jsonType(tok))
		}
		v.SetString(s)
		return nil
	case reflect.Bool:
		b, ok := tok.(bool)
		if !ok {
			return fieldErr(path, "must be true or false, got "+jsonType(tok))
		}
		v.SetBool(b)
		return nil
	case reflect.Int:
		n, ok := tok.(json.Number)
		if !ok {
			return fieldErr(path, "must be an integer, got "+jsonType(tok))
		}
		// ParseInt refuses "1.0" and "1e3": a count is written as one.
		i, err := strconv.ParseInt(string(n), 10, 32)
		switch {
		case errors.Is(err, strconv.ErrRange):
			return fieldErr(path, "is out of range, got "+clip.String(string(n), maxEcho))
		case err != nil:
			return fieldErr(path, "must be an integer, got "+clip.String(string(n), maxEcho))
		}
		v.SetInt(i)
		return nil
	}
	// Only reachable if a field of a type this walker does not know is
	// added to Policy; the tests decode every field, so it shows there.
	return fieldErr(path, "policy: cannot decode a "+v.Type().String())
}

// object reads the members of a JSON object whose '{' has been read.
func (d *decoder) object(v reflect.Value, path string) error {
	t := v.Type()
	seen := make([]bool, t.NumField())
	for d.dec.More() {
		tok, err := d.dec.Token()
		if err != nil {
			return d.syntax(err, path)
		}
		name := tok.(string) // the decoder guarantees object keys are strings
		i := fieldIndex(t, name)
		if i < 0 {
			return fieldErr(join(path, clip.String(name, maxEcho)), "unknown field")
		}
		if seen[i] {
			return fieldErr(join(path, clip.String(name, maxEcho)), "duplicate field")
		}
		seen[i] = true
		if err := d.value(v.Field(i), join(path, name)); err != nil {
			return err
		}
	}
	for i, ok := range seen {
		if !ok {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			d.absent[join(path, tag)] = true
		}
	}
	return d.closing(path)
}

// closing reads the '}' or ']' that More said is next.
func (d *decoder) closing(path string) error {
	if _, err := d.dec.Token(); err != nil {
		return d.syntax(err, path)
	}
	return nil
}

// syntax turns a decoder error into a field error at path.
func (d *decoder) syntax(err error, path string) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fieldErr(path, "invalid JSON: unexpected end of input")
	}
	// The decoder's InputOffset is where the offending token or value
	// starts; SyntaxError.Offset is not reliable across its code paths.
	line, col := position(d.in, d.dec.InputOffset())
	return fieldErr(path, fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(err.Error(), "json: ")))
}

// position turns a byte offset into a 1-based line and column (in bytes).
func position(in []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(in)))
	before := in[:off]
	line = 1 + bytes.Count(before, []byte{'\n'})
	return line, int(off) - bytes.LastIndexByte(before, '\n')
}

// fieldIndex finds the struct field whose JSON name is exactly name.
func fieldIndex(t reflect.Type, name string) int {
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag == name {
			return i
		}
	}
	return -1
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// jsonType names the JSON type of a token, for messages.
func jsonType(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

// maxEcho is how much of a value from the document a message echoes:
// enough to find it, never a whole pasted blob.
const maxEcho = 32

// quote echoes a value from the document, shortened and with control
// characters escaped (clip), in double quotes.
func quote(s string) string {
	return `"` + strings.ReplaceAll(clip.String(s, maxEcho), `"`, `\"`) + `"`
}

// DefaultOverlap is renewal.overlap in Default, and in a document written
// before renewal existed when its other fields leave room for it.
const DefaultOverlap = 2 * day

// fillLaterFields gives the fields added after release 0 that a document
// left out the values that keep its meaning (see Parse).
func (p *Policy) fillLaterFields(absent map[string]bool) {
	if absent["renewal"] || absent["renewal.period"] {
		p.Renewal.Period = p.Tokens.Horizon
	}
	if absent["renewal"] || absent["renewal.overlap"] {
		p.Renewal.Overlap = Duration(p.legacyOverlap())
	}
	lt := absent["attestations"] || absent["attestations.lifetimes"]
	for _, k := range attestation.Kinds {
		if lt || absent["attestations.lifetimes."+string(k)] {
			*p.Attestations.Lifetimes.field(k) = p.Attestations.MaxLifetime
		}
	}
}

// legacyOverlap is the renewal overlap for a document that predates it:
// DefaultOverlap, cut so that every check the document passed before
// (windows per batch, key lifetime, both over the batch's reach) still
// passes, never negative.
func (p *Policy) legacyOverlap() time.Duration {
	o := min(DefaultOverlap, max(p.Tokens.Horizon.D(), 0))
	h := p.Tokens.Horizon.D()
	for _, c := range Colours {
		if l := p.Tokens.Lifetime.Of(c); l > 0 && l < maxDuration/MaxWindows {
			// 1 + ceil((h+o)/l) <= MaxWindows  <=>  h+o <= (MaxWindows-1)*l
			o = min(o, (MaxWindows-1)*l-h)
		}
	}
	if signs := max(p.Keys.Rotation.D(), p.Bundle.Lifetime.D()); signs > 0 && p.Keys.Lifetime > 0 {
		o = min(o, p.Keys.Lifetime.D()-addSat(signs, max(h, 0)))
	}
	return max(o, 0)
}
