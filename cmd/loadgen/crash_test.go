package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/httpapi"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildOut  []byte
	buildDir  string
)

// TestMain removes the issuer binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// issuerBinary builds cmd/issuer once for every test that runs it.
func issuerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "loadgen-test-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "issuer")
		cmd := exec.Command("go", "build", "-o", builtBin, "github.com/healthcode/healthcode/cmd/issuer")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build issuer: %v\n%s", buildErr, buildOut)
	}
	return builtBin
}

func startTestIssuer(t *testing.T, bin, data string) *issuerProc {
	t.Helper()
	p, err := startIssuer(context.Background(), bin, data, filepath.Join(filepath.Dir(data), "issuer.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.Kill()
		}
	})
	return p
}

// An issuer killed with SIGKILL in the middle of a load keeps the replay
// record of every redemption it answered: after a restart on the same
// directory, each of those attestations is refused as already redeemed.
func TestCrashUnderLoadLosesNoAnsweredRedemption(t *testing.T) {
	bin := issuerBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startTestIssuer(t, bin, data)
	key, err := p.DemoKey()
	if err != nil {
		t.Fatal(err)
	}

	const killAfter = 200 // answered redemptions before the kill
	var (
		mu       sync.Mutex
		answered []string
	)
	reached := make(chan struct{})
	cfg := Config{
		URL: p.URL, Key: key, AttesterID: demoAttesterID, Concurrency: 32,
		Duration: 20 * time.Second, Requests: 3000, Timeout: 5 * time.Second,
		OnOK: func(att string) {
			mu.Lock()
			defer mu.Unlock()
			answered = append(answered, att)
			if len(answered) == killAfter {
				close(reached)
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := Run(ctx, cfg)
		done <- outcome{res, err}
	}()
	select {
	case <-reached:
	case o := <-done:
		t.Fatalf("load ended before %d redemptions were answered: %+v %v", killAfter, o.res, o.err)
	case <-time.After(20 * time.Second):
		t.Fatalf("fewer than %d redemptions answered in 20s", killAfter)
	}
	// Requests are in flight: 32 workers never wait between them.
	p.Kill()
	cancel()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	for k, n := range o.res.Errors {
		// Only the requests cut off by the kill may fail, and only by the
		// connection going away: never an error answer.
		if k != "transport" {
			t.Errorf("%d requests answered %s before the kill", n, k)
		}
	}
	mu.Lock()
	got := append([]string(nil), answered...)
	mu.Unlock()
	if len(got) != o.res.OK || len(got) < killAfter {
		t.Fatalf("recorded %d answered attestations, load counted %d", len(got), o.res.OK)
	}
	t.Logf("killed after %d answered redemptions (%d requests cut off)", len(got), o.res.ErrorCount)

	// The database must open clean on the same directory.
	p2 := startTestIssuer(t, bin, data)
	if p2.URL == "" {
		t.Fatal("no URL after restart")
	}
	client := newClient(8, 5*time.Second)
	defer client.CloseIdleConnections()

	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failures []string
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				status, code := post(t, client, p2.URL, got[n])
				if status != http.StatusConflict || code != issuer.CodeAlreadyRedeemed {
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%d %s", status, code))
					failMu.Unlock()
				}
			}
		}()
	}
	for n := range got {
		work <- n
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d answered attestations were not refused as already redeemed after the restart; first: %s", len(failures), len(got), failures[0])
	}

	// The restarted issuer still redeems new attestations.
	fresh, err := presign(key, demoAttesterID, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if status, code := post(t, client, p2.URL, fresh[0]); status != http.StatusOK {
		t.Fatalf("fresh attestation after restart: %d %s", status, code)
	}
	if err := p2.Stop(); err != nil {
		t.Fatal(err)
	}
}

// post redeems one attestation and returns the status and error code.
func post(t *testing.T, client *http.Client, base, att string) (int, string) {
	t.Helper()
	b, err := json.Marshal(httpapi.TokensRequest{Attestations: []string{att}})
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	resp, err := client.Post(base+"/v1/tokens", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	var e httpapi.ErrorResponse
	if resp.StatusCode != http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Errorf("status %d with a body that is not an error: %v", resp.StatusCode, err)
		}
	}
	return resp.StatusCode, e.Error.Code
}

// The whole command against an issuer it starts and stops itself.
func TestSpawnedRunReportsJSON(t *testing.T) {
	bin := issuerBinary(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--issuer", bin, "--duration", "1s", "--concurrency", "4", "--requests", "40", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if r.OK < 1 || r.ErrorCount != 0 || !r.IssuerSpawned || r.RSS == nil || r.RSS.Rest <= 0 || r.RSS.Peak < r.RSS.Rest {
		t.Fatalf("result %+v", r)
	}
	if r.OK == 40 && !r.Exhausted {
		t.Fatalf("all 40 sent but not exhausted: %+v", r)
	}
	if r.TokensPerBatch < 1 || !strings.HasPrefix(r.URL, "http://127.0.0.1:") {
		t.Fatalf("result %+v", r)
	}
	if strings.Contains(errb.String(), "kept in") {
		t.Fatalf("temp dir kept after a clean run: %s", errb.String())
	}
}
