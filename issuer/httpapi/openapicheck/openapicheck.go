// Package openapicheck holds the issuer's HTTP exchanges to its OpenAPI
// document (httpapi.OpenAPI), for tests: a request the document calls
// invalid must be refused with a 4xx, and every answer must be one the
// document describes for that request. Tests install Transport as their
// HTTP client's transport, so the document cannot drift from the server.
//
// The validator is pb33f/libopenapi-validator: it implements OpenAPI 3.1
// with JSON Schema 2020-12 (type arrays, const, null). kin-openapi's
// openapi3filter was built on the 3.0 model, and its 3.1 support is recent.
package openapicheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
)

// Checker judges exchanges against one document. It is safe for concurrent
// use.
type Checker struct {
	mu       sync.Mutex
	v        validator.Validator
	failures []string
	checked  map[string]int // "METHOD /spec/path" -> exchanges checked
}

// New parses doc and checks that it is a valid OpenAPI document.
func New(doc []byte) (*Checker, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	v, errs := validator.NewValidator(d, config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("openapi: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("openapi: the document is not valid: %s", describe(verrs))
	}
	return &Checker{v: v, checked: map[string]int{}}, nil
}

// Check judges one exchange; reqBody and respBody are the bodies sent and
// received (req.Body and resp.Body are not read).
func (c *Checker) Check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.check(req, reqBody, resp, respBody)
	if err != nil {
		c.failures = append(c.failures, err.Error())
	}
	return err
}

func (c *Checker) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	what := fmt.Sprintf("%s %s -> %d", req.Method, req.URL.Path, resp.StatusCode)
	r := withBody(req, reqBody)
	reqOK, reqErrs := c.v.ValidateHttpRequestSync(r)
	if !reqOK && unknownRoute(reqErrs) {
		// Not in the document: the server must not answer it either.
		if resp.StatusCode != http.StatusNotFound || !isError(respBody, "not_found") {
			return fmt.Errorf("openapi: %s: the document has no such operation, but the server answered it: %.200s", what, respBody)
		}
		return nil
	}
	if !reqOK && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
		return fmt.Errorf("openapi: %s: the server accepted a request the document refuses: %s", what, describe(reqErrs))
	}
	rr := *resp
	rr.Body = io.NopCloser(bytes.NewReader(respBody))
	if ok, errs := c.v.ValidateHttpResponse(withBody(req, reqBody), &rr); !ok {
		return fmt.Errorf("openapi: %s: the answer does not match the document: %s; body %.300s", what, describe(errs), respBody)
	}
	c.checked[req.Method+" "+req.URL.Path]++
	return nil
}

// Failures lists every exchange that did not match, for a TestMain to
// report (a test may have ignored the error its client returned).
func (c *Checker) Failures() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.failures...)
}

// Checked is the number of exchanges that matched the document.
func (c *Checker) Checked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.checked {
		n += k
	}
	return n
}

// Transport sends through base and checks each exchange; one that does
// not match the document fails the request with the checker's error.
func (c *Checker) Transport(base http.RoundTripper) http.RoundTripper {
	return transport{c: c, base: base}
}

type transport struct {
	c    *Checker
	base http.RoundTripper
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	out := withBody(req, body)
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(got))
	if err := t.c.Check(req, body, resp, got); err != nil {
		return nil, err
	}
	return resp, nil
}

// withBody is a copy of req whose body reads body.
func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	r.Body = http.NoBody
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return r
}

func unknownRoute(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation || e.ValidationSubType == helpers.ValidationMissingOperation {
			return true
		}
	}
	return false
}

func isError(body []byte, code string) bool {
	var e struct {
		Error struct{ Code, Message string }
	}
	return json.Unmarshal(body, &e) == nil && e.Error.Code == code && e.Error.Message != ""
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for n, e := range errs {
		if n > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Message)
		if e.Reason != "" {
			b.WriteString(": " + e.Reason)
		}
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, " [%s: %s]", f.FieldPath, f.Reason)
		}
	}
	return b.String()
}
