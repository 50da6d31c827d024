// Package clip shortens untrusted text before it is echoed in an error
// message or printed: at most max bytes, cut on a rune boundary, invalid
// UTF-8 replaced and control characters shown as escapes, so an echo can
// neither grow a message without bound nor move a terminal's cursor.
package clip

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s cut to at most max bytes of its text (followed by "…"
// when cut), with invalid UTF-8 as U+FFFD and control or other
// non-printable characters as Go escapes (\x1b, \r, \u200e).
func String(s string, max int) string {
	cut := false
	if len(s) > max {
		i := max
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s, cut = s[:i], true
	}
	s = Printable(s)
	if cut {
		s += "…"
	}
	return s
}

// Printable returns s with invalid UTF-8 as U+FFFD and every rune that is
// not printable (control characters, format characters such as bidi
// overrides) written as a Go escape. A printable s is returned as is.
func Printable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	clean := true
	for _, r := range s {
		if !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRuneToASCII(r) // e.g. '\x1b'
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}
