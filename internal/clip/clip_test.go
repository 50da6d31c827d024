package clip

import "testing"

func TestString(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789…"},
		{"ab€cd", 3, "ab…"}, // € is 3 bytes: cut before it, not inside
		{"\x1b[1A\rGREEN", 32, `\x1b[1A\rGREEN`},
		{"bad\xffutf8", 32, "bad\uFFFDutf8"},
		{"rtl\u202eoverride", 32, `rtl\u202eoverride`},
	} {
		if got := String(c.in, c.max); got != c.want {
			t.Errorf("String(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}

func TestPrintableKeepsPrintableUnicode(t *testing.T) {
	for _, s := range []string{"", "JD 1980", "张伟", "Ünïcødé"} {
		if got := Printable(s); got != s {
			t.Errorf("Printable(%q) = %q, want it unchanged", s, got)
		}
	}
}
