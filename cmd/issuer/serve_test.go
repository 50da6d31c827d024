package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/testcert"
)

// firstLine hands the first write (serve's "Healthcode issuer on URL"
// line) to a channel, so the test learns the address without polling.
type firstLine struct {
	ch   chan string
	sent bool
}

func (w *firstLine) Write(p []byte) (int, error) {
	if !w.sent {
		w.sent = true
		w.ch <- string(p)
	}
	return len(p), nil
}

// startServe runs serve on 127.0.0.1:0 until the test ends and returns its
// base URL.
func startServe(t *testing.T, c serveConfig) string {
	t.Helper()
	c.addr = "127.0.0.1:0"
	if c.data == "" {
		c.data = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &firstLine{ch: make(chan string, 1)}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, slog.New(slog.DiscardHandler), out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case line := <-out.ch:
		base, ok := strings.CutPrefix(strings.TrimSpace(line), "Healthcode issuer on ")
		if !ok {
			t.Fatalf("first line %q", line)
		}
		return base
	case err := <-done:
		t.Fatalf("serve returned before listening: %v", err)
	}
	return ""
}

// issuer serve --tls-cert --tls-key serves HTTPS with that certificate, and
// nothing else on its port.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testcert.SelfSigned(t, dir)
	base := startServe(t, serveConfig{data: filepath.Join(dir, "data"), tlsCert: certFile, tlsKey: keyFile, logLevel: "info"})
	if !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("serving on %q, want https://127.0.0.1:PORT", base)
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Fatalf("GET /healthz: %d %s", resp.StatusCode, body)
	}
	if resp.TLS == nil || !resp.TLS.PeerCertificates[0].IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Fatalf("not the test certificate: %+v", resp.TLS)
	}

	// A client that does not trust the certificate refuses the server.
	_, err = (&http.Client{Timeout: 10 * time.Second}).Get(base + "/healthz")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("untrusting client: %v, want an unknown-authority error", err)
	}
	// Plain HTTP on the TLS port gets no answer from the API.
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + strings.TrimPrefix(base, "https://") + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `"status":"ok"`) {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
}

func TestServeTLSFlags(t *testing.T) {
	dir := t.TempDir()
	certFile, _, _ := testcert.SelfSigned(t, dir)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"serve", "--data", dir, "--tls-cert", certFile}, 2, "issuer: --tls-cert and --tls-key go together\n"},
		{[]string{"serve", "--data", dir, "--tls-key", certFile}, 2, "issuer: --tls-cert and --tls-key go together\n"},
		{[]string{"serve", "--data", dir, "--addr", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", filepath.Join(dir, "missing.pem")}, 1, "issuer: load TLS key pair: open "},
		// A certificate is not its own key.
		{[]string{"serve", "--data", dir, "--addr", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", certFile}, 1, "issuer: load TLS key pair: tls: found a certificate rather than a key"},
	} {
		var stderr strings.Builder
		code := run(context.Background(), tc.args, strings.NewReader(""), io.Discard, &stderr)
		if code != tc.code || !strings.HasPrefix(stderr.String(), tc.want) {
			t.Fatalf("%v: exit %d, stderr %q; want %d, %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
	// Nothing was started: no database in the data directory.
	if _, err := os.Stat(filepath.Join(dir, "healthcode.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start left a database: %v", err)
	}
}
