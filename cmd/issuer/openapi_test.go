package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/httpapi/openapicheck"
)

// The admin client's calls go through http.DefaultTransport: checking them
// against the OpenAPI document holds the CLI to the same contract as any
// other client.
func TestMain(m *testing.M) {
	c, err := openapicheck.New(httpapi.OpenAPI)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	http.DefaultTransport = c.Transport(http.DefaultTransport)
	code := m.Run()
	if f := c.Failures(); len(f) > 0 {
		fmt.Fprintf(os.Stderr, "%d exchanges do not match issuer/httpapi/openapi.yaml:\n  %s\n", len(f), strings.Join(f, "\n  "))
		code = 1
	}
	os.Exit(code)
}
