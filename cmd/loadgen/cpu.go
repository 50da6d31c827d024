package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// CPU is the issuer's processor time over the load (user + system, all
// threads, from /proc/PID/stat) per answered redemption, beside the CPU
// this process spent, in the same run, on the bare Ed25519 calls one
// redemption needs: one ed25519.Sign per token of the batch, and two
// ed25519.Verify (the attestation's signature, and the issuer's check of
// one token of the batch as a venue would). Their ratio is what the rest
// of a redemption (HTTP, JSON, JWT encoding, the store, allocation, the
// kernel's work for sockets and fsync) costs.
//
// The bare calls are timed by thread CPU (CLOCK_THREAD_CPUTIME_ID) on one locked OS
// thread, a few at a time every bareEvery while the load runs, so that
// they meet the same contention for caches and cores as the issuer's own
// (two vCPUs may be hyperthreads of one core); before and after the load,
// on a quiet loadgen, they cost less, and those figures are kept beside.
type CPU struct {
	IssuerSeconds         float64 `json:"issuer_s"`
	IssuerUserSeconds     float64 `json:"issuer_user_s"`
	IssuerSystemSeconds   float64 `json:"issuer_system_s"` // the kernel's work for it: sockets, fsync, futexes
	IssuerPerRedemptionUs float64 `json:"issuer_per_redemption_us"`
	BareSigns             float64 `json:"bare_signs"` // tokens per batch
	BareVerifies          int     `json:"bare_verifies"`
	BareSignUs            float64 `json:"bare_sign_us"`   // one ed25519.Sign, during the load
	BareVerifyUs          float64 `json:"bare_verify_us"` // one ed25519.Verify, during the load
	BareSamples           int     `json:"bare_samples"`   // rounds timed during the load
	BarePerRedemption     float64 `json:"bare_per_redemption_us"`
	BareBeforeUs          float64 `json:"bare_before_us"` // per redemption, before the load
	BareAfterUs           float64 `json:"bare_after_us"`  // per redemption, after it
	Ratio                 float64 `json:"ratio"`          // issuer CPU per redemption / bare during the load
}

// verifiesPerRedemption: the attestation, and the self-check of one token.
const verifiesPerRedemption = 2

func (c *CPU) setBare(before, during, after bareCost, signs float64) {
	c.BareSigns, c.BareVerifies = signs, verifiesPerRedemption
	c.BareSignUs, c.BareVerifyUs, c.BareSamples = during.sign, during.verify, during.rounds
	per := func(b bareCost) float64 { return signs*b.sign + verifiesPerRedemption*b.verify }
	c.BarePerRedemption, c.BareBeforeUs, c.BareAfterUs = per(during), per(before), per(after)
	if c.BarePerRedemption > 0 && c.IssuerPerRedemptionUs > 0 {
		c.Ratio = c.IssuerPerRedemptionUs / c.BarePerRedemption
	}
}

// cpuTicks is a process's utime and stime in clock ticks.
type cpuTicks struct{ user, system int64 }

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

func (t cpuTicks) sub(u cpuTicks) time.Duration {
	return time.Duration(t.user+t.system-u.user-u.system) * time.Second / clockTicks
}

func (t cpuTicks) userSince(u cpuTicks) time.Duration {
	return time.Duration(t.user-u.user) * time.Second / clockTicks
}

func (t cpuTicks) systemSince(u cpuTicks) time.Duration {
	return time.Duration(t.system-u.system) * time.Second / clockTicks
}

func readCPU(pid int) (cpuTicks, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return cpuTicks{}, err
	}
	return parseStat(string(b))
}

// parseStat reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// or parentheses itself, so fields are counted from the last ')'.
func parseStat(s string) (cpuTicks, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return cpuTicks{}, errors.New("/proc stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return cpuTicks{}, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return cpuTicks{}, fmt.Errorf("/proc stat: %w", err)
	}
	return cpuTicks{user: utime, system: stime}, nil
}

// bareCost is the thread CPU of one ed25519.Sign and one ed25519.Verify,
// in microseconds, over rounds timed rounds.
type bareCost struct {
	sign, verify float64
	rounds       int
}

// Bare rounds: bareRounds calls of each at rest; during the load,
// bareLoadSigns and bareLoadVerifies every bareEvery (about 0.2% of one
// core: the issuer hardly notices).
const (
	bareRounds       = 400
	bareLoadSigns    = 8
	bareLoadVerifies = 2
	bareEvery        = 200 * time.Millisecond
)

// bareCalls are the calls timed: signatures over a token-sized message
// with a fresh key, verifications of a real attestation.
type bareCalls struct {
	key    ed25519.PrivateKey
	msg    []byte
	pub    ed25519.PublicKey
	signed []byte
	sig    []byte
}

func newBareCalls(attesterKey ed25519.PrivateKey, att string) (*bareCalls, error) {
	dot := strings.LastIndexByte(att, '.')
	if dot < 0 {
		return nil, errors.New("bare: attestation has no signature")
	}
	sig, err := decodeSig(att[dot+1:])
	if err != nil {
		return nil, err
	}
	c := &bareCalls{signed: []byte(att[:dot]), sig: sig, pub: attesterKey.Public().(ed25519.PublicKey),
		// A token's signing input is about 150 bytes; Ed25519's cost
		// hardly depends on the length at this size.
		msg: make([]byte, 150)}
	if !ed25519.Verify(c.pub, c.signed, c.sig) {
		return nil, errors.New("bare: the attestation does not verify")
	}
	if _, c.key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	return c, nil
}

// round times signs signatures and verifies verifications by the calling
// thread's CPU; the caller has locked it to its OS thread.
func (c *bareCalls) round(signs, verifies int) (sign, verify time.Duration, err error) {
	t0, err := threadCPU()
	if err != nil {
		return 0, 0, err
	}
	for range signs {
		ed25519.Sign(c.key, c.msg)
	}
	t1, _ := threadCPU()
	ok := true
	for range verifies {
		ok = ed25519.Verify(c.pub, c.signed, c.sig) && ok
	}
	t2, err := threadCPU()
	if !ok {
		err = errors.New("bare: a verification failed")
	}
	return t1 - t0, t2 - t1, err
}

func (c *bareCalls) cost(sign, verify time.Duration, signs, verifies, rounds int) bareCost {
	us := func(d time.Duration, n int) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
	return bareCost{sign: us(sign, signs), verify: us(verify, verifies), rounds: rounds}
}

// measureBare times bareRounds of each call at once, on one locked thread.
func measureBare(attesterKey ed25519.PrivateKey, att string) (*bareCost, error) {
	c, err := newBareCalls(attesterKey, att)
	if err != nil {
		return nil, err
	}
	done := make(chan bareResult, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s, v, err := c.round(bareRounds, bareRounds)
		done <- bareResult{c.cost(s, v, bareRounds, bareRounds, 1), err}
	}()
	o := <-done
	if o.err != nil {
		return nil, o.err
	}
	return &o.c, nil
}

type bareResult struct {
	c   bareCost
	err error
}

// bareDuring times a few calls every bareEvery until stop is closed, on
// one locked thread, and sends the total.
func bareDuring(c *bareCalls, stop <-chan struct{}) <-chan bareResult {
	done := make(chan bareResult, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var sign, verify time.Duration
		rounds := 0
		tick := time.NewTicker(bareEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				if rounds == 0 {
					// A load shorter than bareEvery: one round at its end.
					s, v, err := c.round(bareLoadSigns, bareLoadVerifies)
					sign, verify, rounds = s, v, 1
					if err != nil {
						done <- bareResult{err: err}
						return
					}
				}
				done <- bareResult{c: c.cost(sign, verify, rounds*bareLoadSigns, rounds*bareLoadVerifies, rounds)}
				return
			case <-tick.C:
				s, v, err := c.round(bareLoadSigns, bareLoadVerifies)
				if err != nil {
					done <- bareResult{err: err}
					return
				}
				sign, verify, rounds = sign+s, verify+v, rounds+1
			}
		}
	}()
	return done
}

func decodeSig(s string) ([]byte, error) {
	sig, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, errors.New("bare: attestation signature is not a base64url Ed25519 signature")
	}
	return sig, nil
}
