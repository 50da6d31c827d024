package httpapi

import (
	"strconv"

	"github.com/healthcode/healthcode/internal/jsonw"
)

// appendJSON appends r exactly as encoding/json marshals it. The batch
// answer is the biggest body the issuer writes (a few dozen tokens), and
// reflection over it showed in the redemption's CPU profile.
func (r TokensResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"colour":`...)
	b = jsonw.String(b, r.Colour)
	b = append(b, `,"tokens":`...)
	if r.Tokens == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for n, t := range r.Tokens {
			if n > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"token":`...)
			b = jsonw.String(b, t.Token)
			b = append(b, `,"nbf":`...)
			b = strconv.AppendInt(b, t.NotBefore, 10)
			b = append(b, `,"exp":`...)
			b = strconv.AppendInt(b, t.Expires, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"renew_after":`...)
	b = strconv.AppendInt(b, r.RenewAfter, 10)
	b = append(b, `,"evidence_until":`...)
	b = strconv.AppendInt(b, r.EvidenceUntil, 10)
	return append(b, '}')
}
