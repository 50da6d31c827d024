package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/healthcode/healthcode/web"
)

const serveUsage = `Usage: verifier serve --bundle FILE [--addr 127.0.0.1:8088] [--tls-cert FILE --tls-key FILE] [--pin FINGERPRINT] [--config FILE]

Runs the verifier web app as a kiosk on this machine: open the address it
prints in a browser on the same machine and point the camera at the codes.
The page checks codes in the browser, offline, with the same rules as
'verifier check'; it keeps nothing about a scan. The bundle in FILE (written
by 'verifier sync') is read again on every page load, so a later sync is
picked up without a restart; it is opened under the pin in the verifier's
configuration (or --pin) and refused below its rollback floor, at start and
on every load.

Flags:
  --bundle FILE       the bundle file written by 'verifier sync' (required)
  --addr ADDR         where to listen (default 127.0.0.1:8088); without TLS it
                      must be a loopback address, because browsers only give
                      the camera to plain-http pages on localhost
  --tls-cert FILE     TLS certificate (PEM), with --tls-key: serve HTTPS, so
  --tls-key FILE      tablets on the venue's network can use the kiosk
  --pin FINGERPRINT   open the bundle under this pin instead of the
                      configured one
  --config FILE       the verifier's configuration (default: ` + defaultConfigName + `
                      under the user's configuration directory)

Example:
  verifier serve --bundle bundle.jws --addr 127.0.0.1:8088
`

func (e env) serve(args []string) int {
	c := cmd{env: e, name: "serve", usage: serveUsage}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	file := fs.String("bundle", "", "")
	addr := fs.String("addr", "127.0.0.1:8088", "")
	certFile := fs.String("tls-cert", "", "")
	keyFile := fs.String("tls-key", "", "")
	tf := newTrustFlags(fs)
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	switch {
	case len(pos) != 0:
		return c.usageErr("want no arguments, got %d", len(pos))
	case *file == "":
		return c.usageErr("--bundle is required (the file 'verifier sync' wrote)")
	case (*certFile == "") != (*keyFile == ""):
		return c.usageErr("--tls-cert and --tls-key go together")
	}
	var tlsCfg *tls.Config
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return c.fail("load TLS key pair: %v", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else if err := checkLoopback(*addr); err != nil {
		return c.usageErr("--addr: %v (or serve HTTPS with --tls-cert and --tls-key)", err)
	}
	srv, err := c.kiosk(*file, tf)
	if err != nil {
		return c.fail("%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return c.fail("%v", err)
	}
	scheme := "http"
	if tlsCfg != nil {
		ln, scheme = tls.NewListener(ln, tlsCfg), "https"
	}
	if err := c.serveKiosk(ctx, ln, srv, scheme); err != nil {
		return c.fail("%v", err)
	}
	return exitValid
}

// checkLoopback accepts host:port whose host is a loopback IP or
// "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", clipArg(addr))
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (use 127.0.0.1 or [::1]): browsers only give the camera to http pages on localhost", clipArg(host))
	}
	return nil
}

// kiosk checks the bundle file once up front, so a wrong path or a bundle
// that does not open under the pin fails at start rather than in the
// browser, warns about its age, and returns the server.
func (c cmd) kiosk(file string, tf trustFlags) (*http.Server, error) {
	if err := web.VerifyBuilt(); err != nil {
		return nil, err
	}
	t, err := c.trust(tf)
	if err != nil {
		return nil, err
	}
	b, _, err := loadBundle(file, t)
	if err != nil {
		return nil, err
	}
	switch now := c.now(); {
	case b.Expired(now):
		c.warn("the bundle in %s has expired: the page will refuse every code until 'verifier sync' fetches a new one", file)
	case b.Stale(now):
		c.warn("the bundle in %s is stale: run 'verifier sync' soon", file)
	}
	src := func() (string, string, error) {
		// The configuration too is read again: a sync may have raised the
		// floor or changed the pin.
		t, err := c.trust(tf)
		if err == nil {
			var raw string
			if _, raw, err = loadBundle(file, t); err == nil {
				return raw, t.pin, nil
			}
		}
		// Detail for the operator; the page only learns there is none.
		c.warn("%v", err)
		return "", "", err
	}
	return &http.Server{
		Handler:           web.Kiosk(src),
		ReadHeaderTimeout: 10 * time.Second,
		// net/http's error log names client addresses (invariant 7); the
		// kiosk has no access log either.
		ErrorLog: log.New(io.Discard, "", 0),
	}, nil
}

// serveKiosk serves srv on ln until ctx ends, then shuts it down.
func (c cmd) serveKiosk(ctx context.Context, ln net.Listener, srv *http.Server, scheme string) error {
	fmt.Fprintf(c.stdout, "verifier: serving the kiosk at %s://%s/verify/ (Ctrl-C to stop)\n", scheme, ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
