package openapicheck

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
)

// Run is a test package's TestMain body: it runs m's tests with every call
// through http.DefaultTransport checked against doc, and fails the run on
// any mismatch, even one whose client error a test dropped. The checker is
// stored in *keep when keep is not nil. It returns the exit code.
func Run(m *testing.M, doc []byte, keep **Checker) int {
	c, err := New(doc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if keep != nil {
		*keep = c
	}
	http.DefaultTransport = c.Transport(http.DefaultTransport)
	code := m.Run()
	if f := c.Failures(); len(f) > 0 {
		fmt.Fprintf(os.Stderr, "%d exchanges do not match issuer/httpapi/openapi.yaml:\n  %s\n", len(f), strings.Join(f, "\n  "))
		code = 1
	}
	return code
}
