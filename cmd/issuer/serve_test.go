package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
	"github.com/healthcode/healthcode/policy"
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

// /metrics is served on the operator's own listener, not on the public
// address.
func TestServeMetricsOnItsOwnListener(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := free.Addr().String()
	free.Close()
	base := startServe(t, serveConfig{logLevel: "info", metricsAddr: maddr})
	// A plain client: these exchanges are outside the API document on
	// purpose (the checker holds the rest of the package's to it).
	plain := &http.Client{Transport: &http.Transport{}}
	get := func(url string) (int, string) {
		resp, err := plain.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + maddr + "/metrics"); code != 200 || !strings.Contains(body, "# TYPE go_goroutines gauge") {
		t.Fatalf("metrics listener: %d %.200s", code, body)
	}
	if code, body := get(base + "/metrics"); code != 404 {
		t.Fatalf("public /metrics: %d %.200s", code, body)
	}
	if code, _ := get("http://" + maddr + "/v1/inventory"); code != 404 {
		t.Fatalf("the metrics listener serves more than /metrics: %d", code)
	}
}

func TestServeMetricsAddrLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		remote bool
		want   string
	}{
		{"127.0.0.1:9090", false, ""},
		{"[::1]:9090", false, ""},
		{"localhost:9090", false, ""},
		{"off", false, ""},
		{"0.0.0.0:9090", false, "--metrics-addr 0.0.0.0:9090 is not a loopback address; metrics are for operators (add --metrics-allow-remote to serve them there anyway)"},
		{":9090", false, "--metrics-addr :9090 is not a loopback address; metrics are for operators (add --metrics-allow-remote to serve them there anyway)"},
		{"10.1.2.3:9090", true, ""},
		{"9090", false, `--metrics-addr: want HOST:PORT, got "9090"`},
	} {
		err := checkMetricsAddr(tc.addr, tc.remote)
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
			t.Errorf("checkMetricsAddr(%q, %v) = %v, want %q", tc.addr, tc.remote, err, tc.want)
		}
	}
	dir := t.TempDir()
	code, _, stderr := runIssuer(t, "serve", "--data", dir, "--addr", "127.0.0.1:0", "--metrics-addr", "0.0.0.0:9090")
	if code != 2 || !strings.HasPrefix(stderr, "issuer: --metrics-addr 0.0.0.0:9090 is not a loopback address") {
		t.Fatalf("serve with a public metrics address: exit %d %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "healthcode.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start opened the store: %v", err)
	}
}

// A restart with an older policy file never rolls back the policy the
// issuer holds: the start is refused, naming both versions.
func TestServeRefusesOlderPolicyFile(t *testing.T) {
	t.Setenv(kekEnv, "")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	write := func(name string, version int) string {
		p := policy.Default()
		p.Version = version
		raw, err := p.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, name)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	v5, v2 := write("v5.json", 5), write("v2.json", 2)
	t.Run("start with version 5", func(t *testing.T) {
		startServe(t, serveConfig{data: data, policyFile: v5, logLevel: "info"})
	})
	code, _, stderr := runIssuer(t, "serve", "--data", data, "--addr", "127.0.0.1:0", "--metrics-addr", "off", "--policy", v2)
	want := "issuer: --policy " + v2 + ": the policy given at start has version 2, lower than the stored version 5: a start never rolls the policy back (give it a version above 5, or start without one to keep version 5)\n"
	if code != 1 || stderr != want {
		t.Fatalf("restart with version 2: exit %d\n%s\nwant\n%s", code, stderr, want)
	}
}
