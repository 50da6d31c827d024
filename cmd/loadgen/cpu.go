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
	"syscall"
	"time"
)

// CPU is the issuer's processor time over the load (user + system, all
// threads, from /proc/PID/stat) per answered redemption, beside the CPU
// this process spent, in the same run, on the bare Ed25519 calls one
// redemption needs: one ed25519.Sign per token of the batch, and two
// ed25519.Verify (the attestation's signature, and the issuer's check of
// one token of the batch as a venue would). Their ratio is what the rest
// of a redemption (HTTP, JSON, JWT encoding, the store, allocation) costs.
type CPU struct {
	IssuerSeconds         float64 `json:"issuer_s"`
	IssuerPerRedemptionUs float64 `json:"issuer_per_redemption_us"`
	// Bare cost, measured on one locked OS thread before and after the
	// load (RUSAGE_THREAD), per redemption's worth of calls.
	BareSigns         float64 `json:"bare_signs"`
	BareVerifies      int     `json:"bare_verifies"`
	BareSignUs        float64 `json:"bare_sign_us"`   // one ed25519.Sign
	BareVerifyUs      float64 `json:"bare_verify_us"` // one ed25519.Verify
	BareBeforeUs      float64 `json:"bare_before_us"` // per redemption, before the load
	BareAfterUs       float64 `json:"bare_after_us"`  // per redemption, after it
	BarePerRedemption float64 `json:"bare_per_redemption_us"`
	Ratio             float64 `json:"ratio"` // issuer CPU per redemption / bare
}

// verifiesPerRedemption: the attestation, and the self-check of one token.
const verifiesPerRedemption = 2

func (c *CPU) setBare(before, after bareCost, signs float64) {
	c.BareSigns, c.BareVerifies = signs, verifiesPerRedemption
	c.BareSignUs = (before.sign + after.sign) / 2
	c.BareVerifyUs = (before.verify + after.verify) / 2
	per := func(b bareCost) float64 { return signs*b.sign + verifiesPerRedemption*b.verify }
	c.BareBeforeUs, c.BareAfterUs = per(before), per(after)
	c.BarePerRedemption = (c.BareBeforeUs + c.BareAfterUs) / 2
	if c.BarePerRedemption > 0 && c.IssuerPerRedemptionUs > 0 {
		c.Ratio = c.IssuerPerRedemptionUs / c.BarePerRedemption
	}
}

// cpuTicks is a process's utime + stime in clock ticks.
type cpuTicks int64

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

func (t cpuTicks) sub(u cpuTicks) time.Duration {
	return time.Duration(t-u) * time.Second / clockTicks
}

func readCPU(pid int) (cpuTicks, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStat(string(b))
}

// parseStat reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// or parentheses itself, so fields are counted from the last ')'.
func parseStat(s string) (cpuTicks, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat: %w", err)
	}
	return cpuTicks(utime + stime), nil
}

// bareCost is the thread CPU of one ed25519.Sign and one ed25519.Verify,
// in microseconds.
type bareCost struct{ sign, verify float64 }

const bareRounds = 400

// measureBare times bareRounds signatures over a token-sized message and
// as many verifications of a real attestation, on one locked OS thread, by
// that thread's CPU time: other load on the machine takes wall time from
// it, but little CPU time.
func measureBare(attesterKey ed25519.PrivateKey, att string) (*bareCost, error) {
	dot := strings.LastIndexByte(att, '.')
	if dot < 0 {
		return nil, errors.New("bare: attestation has no signature")
	}
	sig, err := decodeSig(att[dot+1:])
	if err != nil {
		return nil, err
	}
	signed := []byte(att[:dot])
	pub := attesterKey.Public().(ed25519.PublicKey)
	if !ed25519.Verify(pub, signed, sig) {
		return nil, errors.New("bare: the attestation does not verify")
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	// A token's signing input is about 150 bytes; Ed25519's cost hardly
	// depends on the length at this size.
	msg := make([]byte, 150)
	type out struct {
		c   bareCost
		err error
	}
	done := make(chan out, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0, err := threadCPU()
		if err != nil {
			done <- out{err: err}
			return
		}
		for range bareRounds {
			ed25519.Sign(key, msg)
		}
		t1, _ := threadCPU()
		ok := true
		for range bareRounds {
			ok = ed25519.Verify(pub, signed, sig) && ok
		}
		t2, err := threadCPU()
		if !ok {
			err = errors.New("bare: a verification failed")
		}
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / bareRounds }
		done <- out{c: bareCost{sign: us(t1 - t0), verify: us(t2 - t1)}, err: err}
	}()
	o := <-done
	if o.err != nil {
		return nil, o.err
	}
	return &o.c, nil
}

// threadCPU is the calling OS thread's user + system time.
func threadCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func decodeSig(s string) ([]byte, error) {
	sig, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, errors.New("bare: attestation signature is not a base64url Ed25519 signature")
	}
	return sig, nil
}
