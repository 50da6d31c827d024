package issuer

import "fmt"

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
)

// Kinds lists every Kind, so a transport can test that it maps them all.
var Kinds = []Kind{KindInvalid, KindNotFound, KindConflict, KindRefused}

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
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}
