package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/healthcode/healthcode/bundle"
)

const syncUsage = `Usage: verifier sync URL [--pin FINGERPRINT | --pin-qr IMAGE] --bundle FILE [--config FILE] [--timeout DURATION]

Fetches the issuer's trust bundle from URL + "/.well-known/healthcode/bundle"
(or from URL itself if it already ends with that path), checks that it is
signed by the pinned bundle key, is not expired and is not older than any
bundle this verifier accepted before, and writes it to FILE. This is the only
command that uses the network.

The pin and the rollback floor (the highest bundle sequence accepted) are
kept in the verifier's configuration, apart from the bundle file: check,
scan and serve open the bundle file under that pin and refuse it below that
floor, so an edited, replaced, deleted or older bundle file is never
trusted. The first sync needs the pin; later ones may leave it out. A
different pin replaces the configured one (and starts its floor afresh).

Flags:
  --pin FINGERPRINT   the bundle key's fingerprint, sha256:<64 hex digits>,
                      from the issuer's administrator, or the text of the
                      issuer's pin poster QR code; default: the configured pin
  --pin-qr IMAGE      read the pin from a photo or scan (PNG or JPEG) of the
                      issuer's pin poster QR code
  --bundle FILE       where to keep the bundle (required)
  --config FILE       the verifier's configuration (default: ` + defaultConfigName + `
                      under the user's configuration directory)
  --timeout DURATION  give up after this long (default 30s)

Example:
  verifier sync https://issuer.example --pin sha256:3f1c... --bundle bundle.jws
  verifier sync https://issuer.example --pin-qr poster.png --bundle bundle.jws
`

// bundlePath is where the issuer serves its trust bundle.
const bundlePath = "/.well-known/healthcode/bundle"

func (e env) sync(args []string) int {
	c := cmd{env: e, name: "sync", usage: syncUsage}
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	pinFlag := fs.String("pin", "", "")
	pinQR := fs.String("pin-qr", "", "")
	file := fs.String("bundle", "", "")
	configFlag := fs.String("config", "", "")
	timeout := fs.Duration("timeout", 30*time.Second, "")
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	switch {
	case len(pos) != 1:
		return c.usageErr("want one URL, got %d arguments", len(pos))
	case *pinFlag != "" && *pinQR != "":
		return c.usageErr("--pin and --pin-qr both give the pin; use one")
	case *file == "":
		return c.usageErr("--bundle is required (where to keep the bundle)")
	case *timeout <= 0:
		return c.usageErr("--timeout must be positive, got %v", *timeout)
	}
	var pin string
	switch {
	case *pinFlag != "":
		p, err := parsePin(*pinFlag)
		if err != nil {
			return c.usageErr("--pin: %v", err)
		}
		pin = p
	case *pinQR != "":
		p, err := pinFromQR(*pinQR)
		if err != nil {
			return c.fail("--pin-qr: %v", err)
		}
		pin = p
	}
	u, err := bundleURL(pos[0])
	if err != nil {
		return c.usageErr("%v", err)
	}
	cfgPath, err := c.configPath(*configFlag)
	if err != nil {
		return c.fail("%v", err)
	}
	cf, err := loadConfig(cfgPath)
	switch {
	case errors.Is(err, errNoConfig):
		if pin == "" {
			return c.usageErr("--pin (or --pin-qr) is required: no pin is configured yet in %s", cfgPath)
		}
		cf = config{Pin: pin}
	case err != nil:
		// The floor it held is unknown: refuse rather than start from 0.
		return c.fail("%v", err)
	case pin == "":
		pin = cf.Pin
	case pin != cf.Pin:
		c.warn("replacing the configured pin %s with %s; the rollback floor (sequence %d) starts afresh", cf.Pin, pin, cf.Floor)
		cf = config{Pin: pin}
	}

	// A bundle file written before the configuration held the floor (an
	// earlier release) still raises it, if it is genuine under this pin.
	floor := cf.Floor
	switch held, _, err := loadBundle(*file, trust{pin: pin}); {
	case err == nil:
		floor = max(floor, held.Sequence)
	case isNotExist(err):
	default:
		c.warn("ignoring the bundle in %s (the floor in %s still holds): %v", *file, cfgPath, err)
	}

	raw, err := fetch(u, *timeout)
	if err != nil {
		return c.fail("%v", err)
	}
	now := c.now()
	b, err := bundle.Accept(raw, pin, &bundle.Bundle{Sequence: floor}, now)
	if err != nil {
		return c.fail("refused the bundle from %s: %v", u.Redacted(), err)
	}
	// The bundle first: a crash before the configuration is written leaves
	// a bundle above the old floor, which check accepts.
	if err := saveBundle(*file, strings.TrimSpace(raw)); err != nil {
		return c.fail("write %s: %v", *file, err)
	}
	cf.Floor = max(floor, b.Sequence)
	if err := saveConfig(cfgPath, cf); err != nil {
		return c.fail("write %s: %v", cfgPath, err)
	}
	fmt.Fprintf(c.stdout, "accepted bundle sequence %d: %d keys, policy version %d\n", b.Sequence, len(b.Keys), b.Policy.Version)
	fmt.Fprintf(c.stdout, "stale after %s, expires %s\n", fmtUnix(b.StaleAfter), fmtUnix(b.Expires))
	fmt.Fprintf(c.stdout, "written to %s\n", *file)
	fmt.Fprintf(c.stdout, "pin %s and rollback floor %d kept in %s\n", cf.Pin, cf.Floor, cfgPath)
	if b.Stale(now) {
		c.warn("the issuer served a bundle that is already stale; it will expire %s", fmtUnix(b.Expires))
	}
	if msg, ok := clockWarning(b, now); ok {
		c.warn("%s", msg)
	}
	return exitValid
}

// bundleURL turns the issuer's base URL into the bundle's URL.
func bundleURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The bundle is signed and pinned, so plain http cannot forge one;
		// it is allowed for issuers on a local network.
		return nil, fmt.Errorf("URL %q is not an http(s) URL", clipArg(s))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("URL %q: want the issuer's base URL, without query or fragment", clipArg(s))
	}
	if !strings.HasSuffix(u.Path, bundlePath) {
		u = u.JoinPath(bundlePath)
	}
	return u, nil
}

func fetch(u *url.URL, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/jose, text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("fetch %s: no answer within %v", u.Redacted(), timeout)
		}
		return "", fmt.Errorf("fetch %s: %v", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch %s: %s", u.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, bundle.MaxLen+1))
	if err != nil {
		return "", fmt.Errorf("fetch %s: %v", u.Redacted(), err)
	}
	if len(body) > bundle.MaxLen {
		return "", fmt.Errorf("fetch %s: body is larger than %d bytes; not a bundle", u.Redacted(), bundle.MaxLen)
	}
	return string(body), nil
}

func fmtUnix(sec int64) string { return time.Unix(sec, 0).UTC().Format(time.RFC3339) }
