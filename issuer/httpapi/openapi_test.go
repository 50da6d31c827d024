package httpapi_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"

	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/httpapi/openapicheck"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// apiCheck holds every exchange of this package's tests to the OpenAPI
// document: TestMain installs it under http.DefaultTransport, which
// http.Get, http.Post, http.DefaultClient and the issuertest helpers use.
var apiCheck *openapicheck.Checker

func TestMain(m *testing.M) { os.Exit(openapicheck.Run(m, httpapi.OpenAPI, &apiCheck)) }

// The issuer serves the document it was built with.
func TestOpenAPIServed(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	resp, err := http.Get(env.URL + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != string(httpapi.OpenAPI) || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("GET /openapi.yaml: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	if !strings.HasPrefix(string(body), "openapi: 3.1.") {
		t.Fatalf("not an OpenAPI 3.1 document: %.40q", body)
	}
}

// The checker is not a rubber stamp: an answer the document does not
// describe, and a request it refuses that the server accepted, both fail.
func TestOpenAPICheckerRefusesMismatches(t *testing.T) {
	c, err := openapicheck.New(httpapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) *http.Request {
		r, _ := http.NewRequest("GET", "http://127.0.0.1:1"+path, nil)
		return r
	}
	answer := func(status int, ct, body string) *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ct}}}
	}
	cases := []struct {
		name     string
		req      *http.Request
		reqBody  string
		status   int
		ct, body string
		want     string
	}{
		{"undocumented field", get("/healthz"), "", 200, "application/json", `{"status":"ok","uptime":3}`, "does not match the document"},
		{"undocumented status", get("/v1/inventory"), "", 418, "application/json", `{"error":{"code":"teapot","message":"x"}}`, "does not match the document"},
		{"undocumented path answered", get("/v1/secret"), "", 200, "application/json", `{}`, "has no such operation"},
		{"refused request accepted", post("/v1/tokens", `{"Attestations":["a.b.c"]}`), `{"Attestations":["a.b.c"]}`, 200, "application/json",
			`{"colour":"green","tokens":[{"token":"a.b.c","nbf":1,"exp":2}]}`, "accepted a request the document refuses"},
	}
	for _, tc := range cases {
		err := c.Check(tc.req, []byte(tc.reqBody), answer(tc.status, tc.ct, tc.body), []byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// And what matches passes.
	if err := c.Check(get("/healthz"), nil, answer(200, "application/json", ""), []byte(`{"status":"ok"}`)); err != nil {
		t.Fatalf("a documented answer: %v", err)
	}
	if err := c.Check(get("/v1/secret"), nil, answer(404, "application/json", ""), []byte(`{"error":{"code":"not_found","message":"no such endpoint"}}`)); err != nil {
		t.Fatalf("404 for an undocumented path: %v", err)
	}
}

func post(path, body string) *http.Request {
	r, _ := http.NewRequest("POST", "http://127.0.0.1:1"+path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return r
}

// Every route the server has is in the document, and every operation in
// the document is a route (the apps' files come from their file systems).
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	param := regexp.MustCompile(`:([A-Za-z_]+)`)
	routes := map[string]bool{}
	for _, r := range env.Server.App().GetRoutes(true) {
		if r.Method == http.MethodHead || r.Method == "USE" {
			continue
		}
		routes[r.Method+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	doc, err := libopenapi.NewDocument(httpapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	// Served by the metrics listener (issuer serve --metrics-addr).
	elsewhere := map[string]bool{"GET /metrics": true}
	var missing, extra []string
	for r := range routes {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for d := range documented {
		path := strings.SplitN(d, " ", 2)[1]
		fromFS := strings.HasPrefix(path, "/wallet/") || strings.HasPrefix(path, "/verify/")
		if !routes[d] && !fromFS && !elsewhere[d] {
			extra = append(extra, d)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("routes not in openapi.yaml: %v; operations in it that are no route: %v", missing, extra)
	}
}
