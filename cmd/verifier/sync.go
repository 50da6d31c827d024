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

const syncUsage = `Usage: verifier sync URL --pin FINGERPRINT --bundle FILE [--timeout DURATION]

Fetches the issuer's trust bundle from URL + "/.well-known/healthcode/bundle"
(or from URL itself if it already ends with that path), checks that it is
signed by the pinned bundle key, is not expired and is not older than the
bundle already in FILE, and writes it to FILE. This is the only command that
uses the network.

Flags:
  --pin FINGERPRINT   the bundle key's fingerprint, sha256:<64 hex digits>,
                      from the issuer's administrator (required)
  --bundle FILE       where to keep the bundle (required); an existing FILE
                      under the same pin guards against rollback
  --timeout DURATION  give up after this long (default 30s)

Example:
  verifier sync https://issuer.example --pin sha256:3f1c... --bundle bundle.json
`

// bundlePath is where the issuer serves its trust bundle.
const bundlePath = "/.well-known/healthcode/bundle"

func (e env) sync(args []string) int {
	c := cmd{env: e, name: "sync", usage: syncUsage}
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	pin := fs.String("pin", "", "")
	file := fs.String("bundle", "", "")
	timeout := fs.Duration("timeout", 30*time.Second, "")
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	switch {
	case len(pos) != 1:
		return c.usageErr("want one URL, got %d arguments", len(pos))
	case *pin == "":
		return c.usageErr("--pin is required (the bundle key fingerprint, sha256:...)")
	case *file == "":
		return c.usageErr("--bundle is required (where to keep the bundle)")
	case *timeout <= 0:
		return c.usageErr("--timeout must be positive, got %v", *timeout)
	}
	if err := bundle.CheckPin(*pin); err != nil {
		return c.usageErr("--pin: %v", err)
	}
	pin1 := strings.ToLower(*pin)
	u, err := bundleURL(pos[0])
	if err != nil {
		return c.usageErr("%v", err)
	}

	// The bundle already held, if it is genuine under this pin, is the floor
	// for the new one's sequence.
	var prev *bundle.Bundle
	switch held, bf, err := loadBundle(*file); {
	case err == nil && strings.EqualFold(bf.Pin, pin1):
		prev = held
	case err == nil:
		c.warn("%s is pinned to %s; replacing it with a bundle pinned to %s", *file, bf.Pin, pin1)
	case isNotExist(err):
	default:
		c.warn("ignoring the bundle in %s: %v", *file, err)
	}

	raw, err := fetch(u, *timeout)
	if err != nil {
		return c.fail("%v", err)
	}
	now := c.now()
	b, err := bundle.Accept(raw, pin1, prev, now)
	if err != nil {
		return c.fail("refused the bundle from %s: %v", u.Redacted(), err)
	}
	if err := saveBundle(*file, bundleFile{Pin: pin1, Bundle: strings.TrimSpace(raw)}); err != nil {
		return c.fail("write %s: %v", *file, err)
	}
	fmt.Fprintf(c.stdout, "accepted bundle sequence %d: %d keys, policy version %d\n", b.Sequence, len(b.Keys), b.Policy.Version)
	fmt.Fprintf(c.stdout, "stale after %s, expires %s\n", fmtUnix(b.StaleAfter), fmtUnix(b.Expires))
	fmt.Fprintf(c.stdout, "written to %s\n", *file)
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
		return nil, fmt.Errorf("URL %q is not an http(s) URL", truncate(s))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("URL %q: want the issuer's base URL, without query or fragment", truncate(s))
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
