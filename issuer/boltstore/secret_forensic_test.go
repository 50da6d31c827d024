package boltstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

// Issue 12 item 4: a wallet's secret is never stored, only its keyed hash,
// and that hash goes with its record: after the deadline and a sweep, no
// file in the data directory holds it.
func TestForensicSecretHashGoesWithItsRecord(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	const attester = "lab-secret"
	due := t0.Add(7 * 24 * time.Hour)

	var never, hashes []pattern
	for i := range 10 {
		id := fmt.Sprintf("SECRET-MARKER-%02d", i)
		secret := bytes.Repeat([]byte{byte(0xC0 + i)}, 32)
		r := redemption(attester, due, id)
		r.Replay[0].Secret = secret
		r.MaxRetries = 3
		if err := errOf(s.Redeem(ctx, r)); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(secret)
		never = append(never,
			pattern{"secret " + id, secret},
			pattern{"base64url secret " + id, []byte(base64.RawURLEncoding.EncodeToString(secret))},
			pattern{"sha256(secret) " + id, sum[:]},
			pattern{"sha256(secret)[:16] " + id, sum[:16]})
		ek := partitionKey(t, dir, s.epochOf(due.Unix()))
		hashes = append(hashes, pattern{"keyed secret hash " + id, secretHash(ek, attester, id, secret)})
	}
	if h := hits(t, dir, never); len(h) != 0 {
		t.Fatalf("stored although it never should be: %v", h)
	}
	// Control: the keyed hashes are in the file before the deadline.
	for _, p := range hashes {
		if len(hits(t, dir, []pattern{p})) == 0 {
			t.Fatalf("control: %s not found before the sweep", p.what)
		}
	}
	clock.Set(due.Add(24 * time.Hour))
	st, err := s.Sweep(ctx, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted[issuer.CategoryReplay] != len(hashes) {
		t.Fatalf("sweep deleted %v", st.Deleted)
	}
	if h := hits(t, dir, append(never, hashes...)); len(h) != 0 {
		t.Fatalf("after the deadline and a sweep the data directory holds: %v", h)
	}
}
