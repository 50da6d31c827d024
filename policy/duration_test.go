package policy

import (
	"testing"
	"time"
)

func TestDurationString(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{time.Second, "1s"},
		{10 * time.Second, "10s"},
		{time.Minute, "1m"},
		{90 * time.Minute, "1h30m"},
		{time.Hour, "1h"},
		{time.Hour + 10*time.Second, "1h0m10s"},
		{72*time.Hour + 10*time.Minute, "72h10m"},
		{24 * time.Hour, "1d"},
		{72 * time.Hour, "3d"},
		{365 * 24 * time.Hour, "365d"},
		{-24 * time.Hour, "-24h"},
		{-90 * time.Minute, "-1h30m"},
		{1500 * time.Millisecond, "1.5s"},
		{time.Millisecond, "1ms"},
	}
	for _, c := range cases {
		if got := Duration(c.d).String(); got != c.want {
			t.Errorf("Duration(%v).String() = %q, want %q", c.d, got, c.want)
		}
		// Whatever String writes, ParseDuration reads back.
		back, err := ParseDuration(Duration(c.d).String())
		if err != nil || back.D() != c.d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", Duration(c.d).String(), back, err, c.d)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30d":      30 * 24 * time.Hour,
		"0d":       0,
		"72h":      72 * time.Hour,
		"1h30m":    90 * time.Minute,
		"106751d":  106751 * 24 * time.Hour,
		"-106751d": -106751 * 24 * time.Hour,
	}
	for s, want := range good {
		if got, err := ParseDuration(s); err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "1.5d", "1d2h", "106752d", "-106752d", "99999999999999999999d", "3 days", "10"} {
		if got, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", s, got)
		} else if err.Error() != `invalid duration "`+s+`"` {
			t.Errorf("ParseDuration(%q) error = %q", s, err)
		}
	}
}
