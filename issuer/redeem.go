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
// evidence up to the batch's reach, Copies per window, windows in order.
type Batch struct {
	Colour policy.Colour
	Tokens []IssuedToken
	// RenewAfter is when the attestations redeem again (the end of their
	// renewal period: the latest replay deadline of the request).
	RenewAfter time.Time
	// EvidenceUntil is when the evidence stops earning any colour (or the
	// attestations expire, if sooner): the wallet deletes them after it.
	EvidenceUntil time.Time
	// Retry says the batch was issued again for a live record, under the
	// secret it was first redeemed with.
	Retry bool
}

// Request is one redemption: attestations, and optionally the wallet's
// secret for them (SecretSize bytes), which lets it fetch the batch again
// if the answer is lost.
type Request struct {
	Attestations []string
	Secret       []byte
}

// SecretSize is the length of a wallet's per-attestation secret.
const SecretSize = 32

// RetriesPerPeriod is how many times, in one renewal period, a wallet may
// fetch its batch again with the secret it redeemed with. A lost answer
// needs one retry, a flaky network a few; a bound keeps a leaked secret
// from minting batches without end (each retry is a new set of tokens).
const RetriesPerPeriod = 3

// Redemption errors that are not attestation errors.
const (
	CodeNoAttestations   = "no_attestations"
	CodeTooMany          = "too_many_attestations"
	CodeAlreadyRedeemed  = "already_redeemed"
	CodeHintConflict     = "hint_conflict"
	CodeNothingToIssue   = "evidence_window_ended"
	CodeDuplicateInBatch = "duplicate_attestation"
	CodeMalformed        = "malformed_request"
)

// RedeemError is a refused redemption: which attestation (Index, -1 for
// the request as a whole), a code and a client-safe message.
type RedeemError struct {
	Index   int
	Code    string
	Message string
	Kind    Kind
}

func (e *RedeemError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("attestation %d: %s", e.Index, e.Message)
	}
	return e.Message
}

// Redeem checks every attestation, asks the policy for a colour and window,
// records the attestations as redeemed for their renewal period (durably,
// all or none) and signs the batch. Signing overlaps recording, and no
// token leaves before the record is durable, as in step-ca's UseToken: a
// replayed attestation costs a lookup, never a signature.
//
// Renewal: an attestation redeems once per renewal period. Its replay
// record lives until the period ends — floor(now, 1h) + renewal.period —
// or until the attestation can no longer be accepted (exp + skew, rounded
// up to the hour) if that is sooner, so a record is kept no longer than it
// stops a second redemption. The batch reaches floor(now, 1h) +
// tokens.horizon + renewal.overlap (no further than the evidence), so the
// wallet still has codes for the overlap once it may renew.
//
// Retry: a request carrying the secret a live record was redeemed with,
// in the same period, gets a fresh batch for the same windows (the record
// stores only a keyed hash of the secret), up to RetriesPerPeriod times.
// Any other secret, or none, is refused as already redeemed.
func (i *Issuer) Redeem(ctx context.Context, req Request) (*Batch, error) {
	now := i.clock.Now()
	i.mu.RLock()
	p, attesters := i.pol, i.attesters
	i.mu.RUnlock()

	raws := req.Attestations
	if len(raws) == 0 {
		return nil, &RedeemError{Index: -1, Code: CodeNoAttestations, Message: "no attestations given", Kind: KindInvalid}
	}
	if len(raws) > p.Attestations.MaxPerRequest {
		return nil, &RedeemError{Index: -1, Code: CodeTooMany, Kind: KindInvalid,
			Message: fmt.Sprintf("%d attestations given; at most %d per request", len(raws), p.Attestations.MaxPerRequest)}
	}
	if req.Secret != nil && len(req.Secret) != SecretSize {
		return nil, &RedeemError{Index: -1, Code: CodeMalformed, Kind: KindInvalid,
			Message: fmt.Sprintf("secret must be %d bytes, got %d", SecretSize, len(req.Secret))}
	}
	skew := p.Tokens.ClockSkew.D()
	// Verify bounds exp by the longest lifetime of any kind; the kind's own
	// bound is checked below, once the kind is known.
	opts := attestation.Options{Now: now, Skew: skew, MaxLifetime: p.Attestations.Lifetimes.Longest()}
	hour := now.Truncate(time.Hour)
	periodEnd := hour.Add(p.Renewal.Period.D())
	evs := make([]attestation.Evidence, len(raws))
	replay := make([]ReplayKey, len(raws))
	accepted := make([]time.Time, len(raws)) // until when each attestation can be accepted, hour-rounded
	for n, raw := range raws {
		ev, err := attestation.Verify(raw, attesterKeys(attesters), opts)
		if err != nil {
			var ae *attestation.Error
			if errors.As(err, &ae) {
				return nil, &RedeemError{Index: n, Code: ae.Code, Message: ae.Message, Kind: KindRefused}
			}
			return nil, err
		}
		if life := p.Attestations.Lifetimes.Of(ev.Kind); ev.Expires.Sub(now) > life+skew {
			return nil, &RedeemError{Index: n, Code: attestation.CodeTooLong, Kind: KindRefused,
				Message: fmt.Sprintf("attestation expires more than %s from now; the policy allows at most that for a %s attestation", policy.Duration(life), ev.Kind)}
		}
		for m := 0; m < n; m++ {
			if evs[m].Attester == ev.Attester && evs[m].ID == ev.ID {
				return nil, &RedeemError{Index: n, Code: CodeDuplicateInBatch, Kind: KindInvalid, Message: fmt.Sprintf("the same attestation as attestation %d", m)}
			}
		}
		evs[n] = ev
		// Hour-rounded, so the deadline says little of when the
		// attestation was redeemed or signed. Never before the attestation
		// can no longer be accepted in its final period (exp + skew), else
		// it could redeem twice in that period; never past what
		// retention.replay allows — Validate makes the period fit, and an
		// attestation whose acceptance would outlive it (possible only
		// with retention at its bare minimum) is refused rather than kept
		// longer than the policy says.
		accepted[n] = ceil(ev.Expires.Add(skew), time.Hour)
		deadline := periodEnd
		if accepted[n].Before(deadline) {
			deadline = accepted[n]
		}
		if !deadline.After(now) {
			deadline = hour.Add(time.Hour)
		}
		if deadline.After(now.Add(p.Retention.Replay.D())) {
			return nil, &RedeemError{Index: n, Code: attestation.CodeTooLong, Kind: KindRefused,
				Message: "attestation expires too far ahead: its replay record would outlive retention.replay"}
		}
		// Filed by the skew the policy may grow to, not the one in force:
		// a store that names a pair's record by Accepted (redisstore's
		// epochs) must find it again after a policy changes the skew, or
		// on a replica that has not yet seen the change.
		filed := ceil(ev.Expires.Add(policy.MaxClockSkew), time.Hour)
		replay[n] = ReplayKey{Attester: ev.Attester, ID: ev.ID, Deadline: deadline, Secret: req.Secret, Accepted: filed}
	}

	hint := ""
	if p.HolderHint == policy.HintOn {
		for n, ev := range evs {
			if ev.Hint == "" {
				continue
			}
			if hint != "" && ev.Hint != hint {
				return nil, &RedeemError{Index: n, Code: CodeHintConflict, Kind: KindRefused, Message: "attestations carry different holder hints"}
			}
			hint = ev.Hint
		}
	}

	d := p.Evaluate(evs, now)
	// A first redemption's batch reaches from the hour it is made; the
	// same end for every redemption within that hour.
	reach := hour.Add(p.Reach())
	windows := p.Windows(cut(d, reach), now)
	if len(windows) == 0 {
		return nil, &RedeemError{Index: -1, Code: CodeNothingToIssue, Kind: KindRefused, Message: "the evidence no longer covers any validity window"}
	}

	i.mu.RLock()
	key, ok := i.current(now)
	signer := i.signers[key.ID]
	i.mu.RUnlock()
	if !ok {
		return nil, errNoKey
	}
	untrimmedEnd := windows[len(windows)-1].Expires
	windows = trimToKey(windows, key, p)
	if len(windows) == 0 {
		return nil, errNoKey
	}
	if end := windows[len(windows)-1].Expires; end.Before(untrimmedEnd) {
		// The key ends before the batch would (its successor was published
		// late): end the period early too, so that the wallet may renew,
		// under the next key, while it still has the overlap's codes.
		early := end.Add(-p.Renewal.Overlap.D()).Truncate(time.Hour)
		if !early.After(now) {
			early = hour.Add(time.Hour)
		}
		for n := range replay {
			if early.Before(replay[n].Deadline) {
				replay[n].Deadline = early
			}
		}
	}

	// A replay is refused by a read, before any signature is spent on it.
	if err := i.store.Redeemed(ctx, replay, RetriesPerPeriod); err != nil {
		return nil, i.redeemedError(err)
	}
	// Record and sign at once: the commit's fsync and the signatures
	// overlap. The record stays the authority (one transaction checks and
	// writes), and no token leaves before it is durable.
	day := now.UTC().Truncate(24 * time.Hour)
	type result struct {
		res RedeemResult
		err error
	}
	recorded := make(chan result, 1)
	go func() {
		res, err := i.store.Redeem(ctx, Redemption{
			Replay:        replay,
			MaxRetries:    RetriesPerPeriod,
			Colour:        d.Colour,
			Day:           day,
			CountDeadline: day.Add(24*time.Hour + p.Retention.Counts.D()),
		})
		recorded <- result{res, err}
	}()
	b, signErr := sign(signer, d.Colour, hint, p, windows)
	r := <-recorded
	if r.err != nil {
		return nil, i.redeemedError(r.err)
	}
	if signErr != nil {
		// Recorded but not signed: the attestation is spent. Ed25519
		// signing does not fail with a valid key, so this is a bug.
		return nil, signErr
	}
	if len(r.res.Deadlines) != len(replay) || len(r.res.Retried) != len(replay) {
		return nil, fmt.Errorf("issuer: record redemption: the store answered for %d and %d of %d attestations", len(r.res.Deadlines), len(r.res.Retried), len(replay))
	}

	// A retry gets the windows of the batch it repeats: the one that
	// reached floor(first redemption, 1h) + reach, which the record's
	// deadline gives back when it is the end of the period. (A record cut
	// short by its attestation's expiry does not say when its period
	// began; the retry then reaches from now, still no further than the
	// evidence.) In a request that mixes retries and first redemptions the
	// first redemptions' reach, the longer, stands.
	retryReach, allRetried := time.Time{}, true
	for n, retried := range r.res.Retried {
		b.Retry = b.Retry || retried
		if !retried || !r.res.Deadlines[n].Before(accepted[n]) {
			allRetried = false
			continue
		}
		if e := r.res.Deadlines[n].Add(-p.Renewal.Period.D()).Add(p.Reach()); e.After(retryReach) {
			retryReach = e
		}
	}
	if allRetried && retryReach.Before(reach) {
		again := trimToKey(p.Windows(cut(d, retryReach), now), key, p)
		if len(again) == 0 {
			// The batch being repeated has run out; nothing honest to sign.
			return nil, &RedeemError{Index: -1, Code: CodeNothingToIssue, Kind: KindRefused, Message: "the evidence no longer covers any validity window"}
		}
		if b, signErr = sign(signer, d.Colour, hint, p, again); signErr != nil {
			return nil, signErr
		}
		b.Retry = true
	}

	for n, dl := range r.res.Deadlines {
		if dl.After(b.RenewAfter) {
			b.RenewAfter = dl
		}
		if e := p.EvidenceEnd(evs[n]); e.After(b.EvidenceUntil) {
			b.EvidenceUntil = e
		}
	}
	// Check the batch the way a venue will, with the published bundle.
	// One token per batch: the rest differ only in nonce and window, and a
	// verify costs more than a signature.
	if err := i.selfCheck(ctx, b.Tokens[0]); err != nil {
		return nil, err
	}
	return b, nil
}

// cut returns d with its evidence window ending no later than t.
func cut(d policy.Decision, t time.Time) policy.Decision {
	if t.Before(d.Until) {
		d.Until = t
	}
	return d
}

// trimToKey fits windows into the signing key's validity: no token
// outlives its key, and a key made under an earlier, shorter lifetime may
// begin inside the first window of a longer one.
func trimToKey(windows []policy.Window, key SigningKey, p *policy.Policy) []policy.Window {
	for len(windows) > 0 && windows[len(windows)-1].Expires.After(key.NotAfter) {
		windows = windows[:len(windows)-1]
	}
	// Start that first window at the key's nbf (on the grid, and before
	// now) rather than refuse.
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
	return windows
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

func (i *Issuer) redeemedError(err error) error {
	var re *RedeemedError
	if errors.As(err, &re) {
		if err != error(re) {
			// A refusal that came with another failure: a store that
			// writes key by key (redisstore) could not take back what
			// it wrote of this request, which now refuses those
			// attestations for the period. The client is told of the
			// refusal; the operator must hear of the rest.
			i.log.Error("a redemption was refused, and the store failed besides", "err", err)
		}
		return &RedeemError{Index: re.Index, Code: CodeAlreadyRedeemed, Kind: KindConflict, Message: "this attestation has already been redeemed in this renewal period"}
	}
	return fmt.Errorf("issuer: record redemption: %w", err)
}

func (i *Issuer) selfCheck(ctx context.Context, t IssuedToken) error {
	now := i.clock.Now()
	if _, bun := i.Bundle(); bun.Stale(now) && i.sharing == nil {
		// Run keeps it fresh; this covers a clock that jumped. (A replica
		// leaves it to the leader and serves what is published.)
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
