package issuer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
	"github.com/healthcode/healthcode/verifier"
)

// IssuedToken is one token of a batch.
type IssuedToken struct {
	Token     string
	NotBefore time.Time
	Expires   time.Time
}

// Batch is what a redemption returns: tokens for every window of the
// evidence, Copies per window, windows in order.
type Batch struct {
	Colour policy.Colour
	Tokens []IssuedToken
}

// Redemption errors that are not attestation errors.
const (
	CodeNoAttestations   = "no_attestations"
	CodeTooMany          = "too_many_attestations"
	CodeAlreadyRedeemed  = "already_redeemed"
	CodeHintConflict     = "hint_conflict"
	CodeNothingToIssue   = "evidence_window_ended"
	CodeDuplicateInBatch = "duplicate_attestation"
)

// RedeemError is a refused redemption: which attestation (Index, -1 for
// the request as a whole), a code and a client-safe message.
type RedeemError struct {
	Index   int
	Code    string
	Message string
	Status  int // HTTP status: 400, 409, 422
}

func (e *RedeemError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("attestation %d: %s", e.Index, e.Message)
	}
	return e.Message
}

// Redeem checks every attestation, asks the policy for a colour and window,
// records the attestations as redeemed (durably, all or none) and signs the
// batch. Signing comes after recording, as in step-ca's UseToken: a
// replayed attestation costs a lookup, never a signature.
func (i *Issuer) Redeem(ctx context.Context, raws []string) (*Batch, error) {
	now := i.clock.Now()
	i.mu.RLock()
	p, attesters := i.pol, i.attesters
	i.mu.RUnlock()

	if len(raws) == 0 {
		return nil, &RedeemError{Index: -1, Code: CodeNoAttestations, Message: "no attestations given", Status: 400}
	}
	if len(raws) > p.Attestations.MaxPerRequest {
		return nil, &RedeemError{Index: -1, Code: CodeTooMany, Status: 400,
			Message: fmt.Sprintf("%d attestations given; at most %d per request", len(raws), p.Attestations.MaxPerRequest)}
	}
	opts := attestation.Options{Now: now, Skew: p.Tokens.ClockSkew.D(), MaxLifetime: p.Attestations.MaxLifetime.D()}
	evs := make([]attestation.Evidence, len(raws))
	replay := make([]ReplayKey, len(raws))
	for n, raw := range raws {
		ev, err := attestation.Verify(raw, attesterKeys(attesters), opts)
		if err != nil {
			var ae *attestation.Error
			if errors.As(err, &ae) {
				return nil, &RedeemError{Index: n, Code: ae.Code, Message: ae.Message, Status: 422}
			}
			return nil, err
		}
		for m := 0; m < n; m++ {
			if evs[m].Attester == ev.Attester && evs[m].ID == ev.ID {
				return nil, &RedeemError{Index: n, Code: CodeDuplicateInBatch, Status: 400, Message: fmt.Sprintf("the same attestation as attestation %d", m)}
			}
		}
		evs[n] = ev
		// The record lives until the attestation can no longer be
		// redeemed, rounded up to the hour so its deadline says little of
		// when the attestation was signed. It must be a function of the
		// attestation alone: the store finds the record by it, so a replay
		// must compute the same one. An attestation whose record would
		// outlive retention.replay (possible only when retention is set at
		// its bare minimum) is refused rather than kept longer than the
		// policy says.
		deadline := ceil(ev.Expires.Add(opts.Skew), time.Hour)
		if deadline.After(now.Add(p.Retention.Replay.D())) {
			return nil, &RedeemError{Index: n, Code: attestation.CodeTooLong, Status: 422,
				Message: "attestation expires too far ahead: its replay record would outlive retention.replay"}
		}
		replay[n] = ReplayKey{Attester: ev.Attester, ID: ev.ID, Deadline: deadline}
	}

	hint := ""
	if p.HolderHint == policy.HintOn {
		for n, ev := range evs {
			if ev.Hint == "" {
				continue
			}
			if hint != "" && ev.Hint != hint {
				return nil, &RedeemError{Index: n, Code: CodeHintConflict, Status: 422, Message: "attestations carry different holder hints"}
			}
			hint = ev.Hint
		}
	}

	d := p.Evaluate(evs, now)
	windows := p.Windows(d, now)
	if len(windows) == 0 {
		return nil, &RedeemError{Index: -1, Code: CodeNothingToIssue, Status: 422, Message: "the evidence no longer covers any validity window"}
	}

	i.mu.RLock()
	key, ok := i.current(now)
	signer := i.signers[key.ID]
	i.mu.RUnlock()
	if !ok {
		return nil, errNoKey
	}
	// No token outlives its key: drop windows the key does not cover.
	for len(windows) > 0 && windows[len(windows)-1].Expires.After(key.NotAfter) {
		windows = windows[:len(windows)-1]
	}
	// A key made under an earlier, shorter lifetime may begin inside the
	// first window of a longer one: start that window at the key's nbf
	// (on the grid, and before now) rather than refuse.
	if len(windows) > 0 && windows[0].NotBefore.Before(key.NotBefore) {
		gs := int64(p.Tokens.Granularity.D() / time.Second)
		nb := key.NotBefore.Unix()
		if r := (nb%gs + gs) % gs; r != 0 {
			nb += gs - r
		}
		if start := time.Unix(nb, 0).UTC(); start.Before(windows[0].Expires) {
			windows[0].NotBefore = start
		} else {
			windows = windows[1:]
		}
	}
	if len(windows) == 0 {
		return nil, errNoKey
	}

	// A replay is refused by a read, before any signature is spent on it.
	if err := i.store.Redeemed(ctx, replay, 0); err != nil {
		return nil, redeemedError(err)
	}
	// Record and sign at once: the commit's fsync and the signatures
	// overlap. The record stays the authority (one transaction checks and
	// writes), and no token leaves before it is durable.
	day := now.UTC().Truncate(24 * time.Hour)
	recorded := make(chan error, 1)
	go func() {
		_, err := i.store.Redeem(ctx, Redemption{
			Replay:        replay,
			Colour:        d.Colour,
			Day:           day,
			CountDeadline: day.Add(24*time.Hour + p.Retention.Counts.D()),
		})
		recorded <- err
	}()
	b, signErr := sign(signer, d.Colour, hint, p, windows)
	if err := <-recorded; err != nil {
		return nil, redeemedError(err)
	}
	if signErr != nil {
		// Recorded but not signed: the attestation is spent. Ed25519
		// signing does not fail with a valid key, so this is a bug.
		return nil, signErr
	}
	// Check the batch the way a venue will, with the published bundle.
	// One token per batch: the rest differ only in nonce and window, and a
	// verify costs more than a signature.
	if err := i.selfCheck(ctx, b.Tokens[0]); err != nil {
		return nil, err
	}
	return b, nil
}

func sign(signer *token.Signer, colour policy.Colour, hint string, p *policy.Policy, windows []policy.Window) (*Batch, error) {
	b := &Batch{Colour: colour, Tokens: make([]IssuedToken, 0, len(windows)*p.Tokens.Copies)}
	for _, w := range windows {
		c := token.Claims{Colour: colour.Code(), Expires: w.Expires.Unix(), Hint: hint, NotBefore: w.NotBefore.Unix(), Version: p.Version}
		for range p.Tokens.Copies {
			c.Nonce = ""
			s, err := signer.Sign(c)
			if err != nil {
				return nil, fmt.Errorf("issuer: sign token: %w", err)
			}
			b.Tokens = append(b.Tokens, IssuedToken{Token: s, NotBefore: w.NotBefore, Expires: w.Expires})
		}
	}
	return b, nil
}

func redeemedError(err error) error {
	var re *RedeemedError
	if errors.As(err, &re) {
		return &RedeemError{Index: re.Index, Code: CodeAlreadyRedeemed, Status: 409, Message: "this attestation has already been redeemed"}
	}
	return fmt.Errorf("issuer: record redemption: %w", err)
}

func (i *Issuer) selfCheck(ctx context.Context, t IssuedToken) error {
	now := i.clock.Now()
	if _, bun := i.Bundle(); bun.Stale(now) {
		// Run keeps it fresh; this covers a clock that jumped.
		if err := i.Maintain(ctx); err != nil {
			return err
		}
	}
	_, bun := i.Bundle()
	at := t.NotBefore
	if now.After(at) {
		at = now
	}
	if _, err := verifier.Verify(t.Token, bun, at); err != nil {
		return fmt.Errorf("issuer: self-check of a new token failed: %w", err)
	}
	return nil
}

func ceil(t time.Time, d time.Duration) time.Time {
	r := t.Truncate(d)
	if r.Before(t) {
		r = r.Add(d)
	}
	return r
}
