package main

import (
	"os"
	"testing"

	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/httpapi/openapicheck"
)

// The admin client's calls go through http.DefaultTransport: checking them
// against the OpenAPI document holds the CLI to the same contract as any
// other client.
func TestMain(m *testing.M) { os.Exit(openapicheck.Run(m, httpapi.OpenAPI, nil)) }
