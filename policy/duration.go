package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("72h",
// "90m") or a whole number of days ("30d"), which retention periods read
// better in.
type Duration time.Duration

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String writes whole days as "Nd", anything else in Go's form without
// trailing zero units ("1h30m", not "1h30m0s"), so that documents and error
// messages read the way an administrator writes them. ParseDuration reads
// every form String writes.
func (d Duration) String() string {
	td := time.Duration(d)
	if td > 0 && td%day == 0 {
		return strconv.FormatInt(int64(td/day), 10) + "d"
	}
	s := td.String()
	// "1h0m0s" -> "1h0m" -> "1h"; "5m0s" -> "5m". A "0s" right after a
	// digit ("10s") is a real value and stays.
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

const day = 24 * time.Hour

// maxDays is the most whole days a time.Duration holds (about 292 years).
const maxDays = int64(math.MaxInt64 / int64(day))

// ParseDuration reads "30d" or a Go duration.
func ParseDuration(s string) (Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		// Refuse what would overflow rather than wrap to a nonsense value.
		if err != nil || days > maxDays || days < -maxDays {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return Duration(time.Duration(days) * day), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return Duration(v), nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"72h\" or \"30d\"")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Of returns the lifetime for colour c.
func (l Lifetimes) Of(c Colour) time.Duration {
	switch c {
	case Green:
		return l.Green.D()
	case Yellow:
		return l.Yellow.D()
	case Red:
		return l.Red.D()
	}
	return 0
}
