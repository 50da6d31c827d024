package httpapi

import (
	"sync"
	"time"
)

// windowLimiter allows max events per key in each fixed window of the
// issuer's clock (so tests move time instead of sleeping). Keys are token
// names or salted address hashes, never addresses. max 0 allows all.
type windowLimiter struct {
	max    int
	window time.Duration

	mu     sync.Mutex
	start  time.Time
	counts map[string]int
}

// maxLimiterKeys bounds the memory a flood of distinct clients can take
// in one window; past it, new keys are refused until the window ends.
const maxLimiterKeys = 100_000

func newWindowLimiter(max int, window time.Duration) *windowLimiter {
	return &windowLimiter{max: max, window: window, counts: map[string]int{}}
}

// allow counts one event for key; when refused, retry says how long
// until the window ends.
func (l *windowLimiter) allow(key string, now time.Time) (ok bool, retry time.Duration) {
	if l.max <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.start) || !now.Before(l.start.Add(l.window)) {
		l.start = now.Truncate(l.window)
		clear(l.counts)
	}
	n, seen := l.counts[key]
	if (!seen && len(l.counts) >= maxLimiterKeys) || n >= l.max {
		return false, l.start.Add(l.window).Sub(now)
	}
	l.counts[key] = n + 1
	return true, 0
}
