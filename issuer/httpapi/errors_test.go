package httpapi

import (
	"errors"
	"net/http"
	"testing"

	"github.com/healthcode/healthcode/issuer"
)

// Every kind the core names has its status, and only kindStatus says which.
func TestKindStatus(t *testing.T) {
	want := map[issuer.Kind]int{
		issuer.KindInvalid:     http.StatusBadRequest,
		issuer.KindNotFound:    http.StatusNotFound,
		issuer.KindConflict:    http.StatusConflict,
		issuer.KindRefused:     http.StatusUnprocessableEntity,
		issuer.KindUnavailable: http.StatusServiceUnavailable,
	}
	if len(want) != len(issuer.Kinds) || len(kindStatus) != len(issuer.Kinds) {
		t.Fatalf("issuer.Kinds has %d kinds, this test %d, kindStatus %d", len(issuer.Kinds), len(want), len(kindStatus))
	}
	for _, k := range issuer.Kinds {
		t.Run(k.String(), func(t *testing.T) {
			cause := &issuer.InputError{Code: "some_code", Message: "a message", Kind: k}
			var ae *APIError
			if err := kindError(k, cause.Code, cause.Message, cause); !errors.As(err, &ae) {
				t.Fatalf("got %v (%T), want an APIError", err, err)
			}
			if ae.Status != want[k] || ae.Code != "some_code" || ae.Message != "a message" {
				t.Fatalf("got %d %s %q, want %d some_code \"a message\"", ae.Status, ae.Code, ae.Message, want[k])
			}
		})
	}
	// A kind without a status is the server's fault: no APIError, so the
	// client gets a 500 and the operator the detail.
	cause := errors.New("cause")
	err := kindError(issuer.Kind(99), "some_code", "a message", cause)
	var ae *APIError
	if errors.As(err, &ae) || !errors.Is(err, cause) || err.Error() != "no HTTP status for error kind Kind(99): cause" {
		t.Fatalf("got %v (%T), want an internal error wrapping the cause", err, err)
	}
}
