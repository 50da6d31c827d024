package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/token"
	"github.com/healthcode/healthcode/verifier"
)

const checkUsage = `Usage: verifier check --bundle FILE [--json] [--at TIME] [--pin FINGERPRINT] [--config FILE] TOKEN|-

Checks a colour token offline against the trust bundle in FILE and prints
the colour and until when it is valid (and the holder hint, if the policy
uses them). TOKEN "-" reads the token from standard input. Nothing about the
token is kept. The bundle file is opened under the pin in the verifier's
configuration (written by 'verifier sync') and refused if it is older than a
bundle accepted before.

Flags:
  --bundle FILE       the bundle written by 'verifier sync' (required)
  --json              print one JSON object instead of text
  --at TIME           check as if the time were TIME (RFC 3339); default: now
  --pin FINGERPRINT   open the bundle under this pin instead of the
                      configured one
  --config FILE       the verifier's configuration (default: ` + defaultConfigName + `
                      under the user's configuration directory)

Output (exit 0):
  GREEN  valid until 2026-11-23T12:00:00Z
  hint: AB1990
Refused (exit 1):
  INVALID  expired: token has expired: at 2026-11-20T10:00:00Z
  NOT A HEALTH CODE  lab_attestation: this is a lab's attestation, ...
With --json:
  {"valid":true,"colour":"green","not_before":"...","expires":"...","hint":"AB1990",...}
  {"valid":false,"reason":"expired","message":"..."}
Reasons: malformed, bad_signature, unknown_key, unknown_issuer, key_window,
key_withdrawn, window_too_long, off_grid, expired, not_yet_valid,
algorithm_not_allowed, lab_attestation, bundle_expired, no_bundle, no_code.

Example:
  verifier check --bundle bundle.jws eyJhbGciOiJFZERTQSIs...
  pbpaste | verifier check --bundle bundle.jws --json -
`

const scanUsage = `Usage: verifier scan --bundle FILE [--json] [--at TIME] [--pin FINGERPRINT] [--config FILE] IMAGE

Reads the QR code in IMAGE (PNG or JPEG) and checks the token in it exactly
as 'verifier check' does, with the same output and exit status.

Flags:
  --bundle FILE       the bundle written by 'verifier sync' (required)
  --json              print one JSON object instead of text
  --at TIME           check as if the time were TIME (RFC 3339); default: now
  --pin FINGERPRINT   open the bundle under this pin instead of the
                      configured one
  --config FILE       the verifier's configuration (default: ` + defaultConfigName + `
                      under the user's configuration directory)

Example:
  verifier scan --bundle bundle.jws door.png
`

// Reasons of the CLI's own, beside verifier's.
const (
	reasonNoBundle = "no_bundle" // the bundle file is missing or not genuine
	reasonNoCode   = "no_code"   // the image holds no readable QR code
)

// checkFlags are what check and scan share.
type checkFlags struct {
	file   *string
	asJSON *bool
	at     *string
	trust  trustFlags
}

func newCheckFlags(fs *flag.FlagSet) checkFlags {
	return checkFlags{file: fs.String("bundle", "", ""), asJSON: fs.Bool("json", false, ""), at: fs.String("at", "", ""),
		trust: newTrustFlags(fs)}
}

// args parses what check and scan share: one positional argument (what),
// --bundle and --at. ok is false when the command must stop with code.
func (f checkFlags) args(c cmd, fs *flag.FlagSet, args []string, what string) (arg string, now time.Time, code int, ok bool) {
	pos, code, done := c.parse(fs, args)
	if done {
		return "", time.Time{}, code, false
	}
	// Never quote the arguments back: they may be tokens.
	if len(pos) != 1 {
		return "", time.Time{}, c.usageErr("want one %s, got %d arguments", what, len(pos)), false
	}
	if *f.file == "" {
		return "", time.Time{}, c.usageErr("--bundle is required (the file written by 'verifier sync')"), false
	}
	now, err := c.at(*f.at)
	if err != nil {
		return "", time.Time{}, c.usageErr("%v", err), false
	}
	return pos[0], now, 0, true
}

func (e env) check(args []string) int {
	c := cmd{env: e, name: "check", usage: checkUsage}
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	f := newCheckFlags(fs)
	raw, now, code, ok := f.args(c, fs, args, "TOKEN (or - for standard input)")
	if !ok {
		return code
	}
	if raw == "-" {
		// A little over MaxLen, so an over-long token is refused as such.
		data, err := io.ReadAll(io.LimitReader(c.stdin, token.MaxLen+64))
		if err != nil {
			return c.fail("read standard input: %v", err)
		}
		raw = string(data)
	}
	return c.verify(strings.TrimSpace(raw), f, now)
}

func (e env) scan(args []string) int {
	c := cmd{env: e, name: "scan", usage: scanUsage}
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	f := newCheckFlags(fs)
	path, now, code, ok := f.args(c, fs, args, "IMAGE")
	if !ok {
		return code
	}
	img, err := os.Open(path)
	if err != nil {
		return c.fail("%v", err)
	}
	defer img.Close()
	raw, err := qr.Decode(img)
	if err != nil {
		return c.refuse(*f.asJSON, reasonNoCode, err.Error())
	}
	return c.verify(raw, f, now)
}

// verify loads the bundle, checks raw and reports. The bundle is opened under
// the configured pin (or --pin) on every check: the file is only as trusted
// as its signature, and only as new as the floor allows.
func (c cmd) verify(raw string, f checkFlags, now time.Time) int {
	file, asJSON := *f.file, *f.asJSON
	t, err := c.trust(f.trust)
	if err != nil {
		return c.refuse(asJSON, reasonNoBundle, err.Error())
	}
	b, _, err := loadBundle(file, t)
	if err != nil {
		msg := err.Error()
		if isNotExist(err) {
			msg = fmt.Sprintf("no bundle at %s; run 'verifier sync' first", file)
		}
		return c.refuse(asJSON, reasonNoBundle, msg)
	}
	res, err := verifier.Verify(raw, b, now)
	if b.Stale(now) && !b.Expired(now) {
		c.warn("the trust bundle is stale since %s and expires %s; run 'verifier sync'", fmtUnix(b.StaleAfter), fmtUnix(b.Expires))
	}
	if msg, ok := clockWarning(b, now); ok {
		c.warn("%s", msg)
	}
	if err != nil {
		return c.refuse(asJSON, verifier.Reason(err), err.Error())
	}
	if asJSON {
		c.printJSON(validJSON{
			Valid: true, Colour: res.Colour.String(),
			NotBefore: res.NotBefore.Format(time.RFC3339), Expires: res.Expires.Format(time.RFC3339),
			Hint: res.Hint, KeyID: res.KeyID, PolicyVersion: res.PolicyVersion, BundleStale: res.BundleStale,
		})
		return exitValid
	}
	fmt.Fprintf(c.stdout, "%s  valid until %s\n", strings.ToUpper(res.Colour.String()), res.Expires.Format(time.RFC3339))
	if res.Hint != "" {
		// The verifier already refuses hints outside their set; escape
		// anyway, so the terminal never acts on what a token says.
		fmt.Fprintf(c.stdout, "hint: %s\n", clip.String(res.Hint, 64))
	}
	return exitValid
}

// refuse reports a refusal. Messages quote token and file content only
// through internal/clip; they are escaped once more here, since nothing a
// token or a file says may move the terminal's cursor under a verdict.
func (c cmd) refuse(asJSON bool, reason, msg string) int {
	if asJSON {
		c.printJSON(invalidJSON{Reason: reason, Message: msg})
		return exitInvalid
	}
	verdict := "INVALID"
	if reason == verifier.ReasonLabAttestation {
		verdict = "NOT A HEALTH CODE"
	}
	fmt.Fprintf(c.stdout, "%s  %s: %s\n", verdict, reason, clip.Printable(msg))
	return exitInvalid
}

type validJSON struct {
	Valid         bool   `json:"valid"`
	Colour        string `json:"colour"`
	NotBefore     string `json:"not_before"`
	Expires       string `json:"expires"`
	Hint          string `json:"hint,omitempty"`
	KeyID         string `json:"key_id"`
	PolicyVersion int    `json:"policy_version"`
	BundleStale   bool   `json:"bundle_stale"`
}

type invalidJSON struct {
	Valid   bool   `json:"valid"` // always false
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (c cmd) printJSON(v any) {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // stdout failing leaves nothing better to do
}
