package verifier

import (
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// A token's header and claims are flat JSON objects of strings and integers.
// objectReader walks one without allocating, and is stricter than
// encoding/json where strictness closes a door: member names must match
// byte for byte (encoding/json matches struct fields case-insensitively),
// names may not be escaped, and numbers must be integers.

// Static scan errors, so the scan itself never allocates; callers wrap them
// in ErrMalformed with the part and member they were reading.
var (
	errNotObject  = errors.New("not a JSON object")
	errSyntax     = errors.New("invalid JSON")
	errTrailing   = errors.New("data after the object")
	errValueKind  = errors.New("value is neither a string nor an integer")
	errNotInteger = errors.New("number is not an integer")
	errRange      = errors.New("integer out of range")
	errEscapedKey = errors.New("escaped member name")
	errBadUTF8    = errors.New("string is not valid UTF-8")
)

// value is one member's value: a string (raw bytes between the quotes) or an
// integer.
type value struct {
	isString bool
	escaped  bool   // raw holds JSON escapes; decode with str
	raw      []byte // string contents, without quotes
	num      int64
}

// str returns the string value. The escaped form is rare (the issuer only
// escapes <, > and & in hints), so only it pays for encoding/json.
func (v value) str() (string, error) {
	if !v.escaped {
		return string(v.raw), nil
	}
	// raw sits between two quotes in the original buffer; rebuild them.
	q := make([]byte, 0, len(v.raw)+2)
	q = append(append(append(q, '"'), v.raw...), '"')
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", errSyntax
	}
	return s, nil
}

type objectReader struct {
	b     []byte
	i     int
	count int
}

func (r *objectReader) skipSpace() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *objectReader) peek() byte {
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// open consumes the opening brace.
func (r *objectReader) open() error {
	r.skipSpace()
	if r.peek() != '{' {
		return errNotObject
	}
	r.i++
	return nil
}

// next returns the next member, or done once the closing brace (followed by
// nothing but white space) has been read.
func (r *objectReader) next() (key []byte, v value, done bool, err error) {
	r.skipSpace()
	if r.peek() == '}' {
		r.i++
		r.skipSpace()
		if r.i != len(r.b) {
			return nil, value{}, false, errTrailing
		}
		return nil, value{}, true, nil
	}
	if r.count > 0 {
		if r.peek() != ',' {
			return nil, value{}, false, errSyntax
		}
		r.i++
		r.skipSpace()
	}
	k, esc, err := r.string()
	if err != nil {
		return nil, value{}, false, err
	}
	if esc {
		return nil, value{}, false, errEscapedKey
	}
	r.skipSpace()
	if r.peek() != ':' {
		return nil, value{}, false, errSyntax
	}
	r.i++
	r.skipSpace()
	switch c := r.peek(); {
	case c == '"':
		s, esc, err := r.string()
		if err != nil {
			return nil, value{}, false, err
		}
		v = value{isString: true, escaped: esc, raw: s}
	case c == '-' || (c >= '0' && c <= '9'):
		n, err := r.integer()
		if err != nil {
			return nil, value{}, false, err
		}
		v = value{num: n}
	case c == 't' || c == 'f' || c == 'n' || c == '{' || c == '[':
		return k, value{}, false, errValueKind // k: callers name the member
	default:
		return nil, value{}, false, errSyntax
	}
	r.count++
	return k, v, false, nil
}

// string reads a JSON string and returns its raw contents.
func (r *objectReader) string() (s []byte, escaped bool, err error) {
	if r.peek() != '"' {
		return nil, false, errSyntax
	}
	r.i++
	start := r.i
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			s = r.b[start:r.i]
			r.i++
			if !utf8.Valid(s) {
				return nil, false, errBadUTF8
			}
			return s, escaped, nil
		case c == '\\':
			escaped = true
			if r.i+1 >= len(r.b) {
				return nil, false, errSyntax
			}
			switch r.b[r.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.i += 2
			case 'u':
				u, ok := r.hex4(r.i)
				if !ok {
					return nil, false, errSyntax
				}
				r.i += 6
				// A surrogate stands only as the first half of a pair;
				// encoding/json would turn a lone one into U+FFFD.
				switch {
				case u >= 0xdc00 && u <= 0xdfff:
					return nil, false, errBadUTF8
				case u >= 0xd800 && u <= 0xdbff:
					if lo, ok := r.hex4(r.i); !ok || lo < 0xdc00 || lo > 0xdfff {
						return nil, false, errBadUTF8
					}
					r.i += 6
				}
			default:
				return nil, false, errSyntax
			}
		case c < 0x20:
			return nil, false, errSyntax
		default:
			r.i++
		}
	}
	return nil, false, errSyntax
}

// integer reads a JSON number that must be an integer fitting int64.
func (r *objectReader) integer() (int64, error) {
	neg := false
	if r.peek() == '-' {
		neg = true
		r.i++
	}
	start := r.i
	var n uint64
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		d := uint64(r.b[r.i] - '0')
		if n > (1<<63)/10 || n*10 > (1<<63)-d {
			return 0, errRange
		}
		n = n*10 + d
		r.i++
	}
	digits := r.i - start
	switch {
	case digits == 0:
		return 0, errSyntax
	case digits > 1 && r.b[start] == '0':
		return 0, errSyntax // JSON forbids leading zeros
	}
	if c := r.peek(); c == '.' || c == 'e' || c == 'E' {
		return 0, errNotInteger
	}
	if neg {
		return -int64(n), nil // n == 1<<63 wraps to MinInt64, as it should
	}
	if n > 1<<63-1 {
		return 0, errRange
	}
	return int64(n), nil
}

// hex4 reads the escape \uXXXX at i.
func (r *objectReader) hex4(i int) (rune, bool) {
	if i+6 > len(r.b) || r.b[i] != '\\' || r.b[i+1] != 'u' {
		return 0, false
	}
	var u rune
	for _, h := range r.b[i+2 : i+6] {
		if !isHex(h) {
			return 0, false
		}
		u = u<<4 | rune(hexVal(h))
	}
	return u, true
}

func hexVal(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
