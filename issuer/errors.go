package issuer

import (
	"errors"
	"fmt"
)

// Kind says what sort of refusal an error is, in the core's terms; each
// transport maps it to its own status (issuer/httpapi to HTTP) in one place,
// so the core never speaks a protocol.
type Kind int

const (
	// KindInvalid: the request or an argument is malformed or out of
	// range. It is the zero Kind, the one an InputError has unless set.
	KindInvalid Kind = iota
	// KindNotFound: the request names something that is not held.
	KindNotFound
	// KindConflict: the request clashes with what is held (a name taken,
	// a key already revoked, an attestation already redeemed).
	KindConflict
	// KindRefused: the request is well formed but what it carries is
	// refused (an attestation that fails its checks, an invalid policy,
	// evidence that no longer covers any window).
	KindRefused
	// KindUnavailable: a part the issuer depends on (a replica's etcd or
	// Redis) did not answer; the same request may pass later. Errors of
	// this kind are *UnavailableError.
	KindUnavailable
)

// Kinds lists every Kind, so a transport can test that it maps them all.
var Kinds = []Kind{KindInvalid, KindNotFound, KindConflict, KindRefused, KindUnavailable}

func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not found"
	case KindConflict:
		return "conflict"
	case KindRefused:
		return "refused"
	case KindUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ErrUnavailable matches (errors.Is) every *UnavailableError: a store
// adapter wraps the errors of a backing part that does not answer (a
// timeout, a refused connection, a cluster without a quorum or a slot's
// master) with Unavailable, and the core passes them on wrapped, so a
// transport can tell "try again" from a fault.
var ErrUnavailable = errors.New("unavailable")

// UnavailableError is a backing part's failure to answer. Part names it
// for the operator ("etcd", "redis"); Err is the client's error.
type UnavailableError struct {
	Part string
	Err  error
}

// Unavailable wraps err, from the part named, as an *UnavailableError.
func Unavailable(part string, err error) error { return &UnavailableError{Part: part, Err: err} }

func (e *UnavailableError) Error() string   { return e.Part + " unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error   { return e.Err }
func (e *UnavailableError) Is(t error) bool { return t == ErrUnavailable }
