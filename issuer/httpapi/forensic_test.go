package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// Invariant 5 end to end, through the real issuer: after every deadline
// and a sweep, no file in the data directory holds a byte from which a
// redemption, an audit entry or a retired signing key can be recovered.
func TestForensicDataDirectoryAfterDeadlines(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	ctx := context.Background()

	var needles []forensic.Pattern
	for n := range 5 {
		id := fmt.Sprintf("FORENSIC-MARKER-%04d", n)
		att, err := attestation.Sign(env.AttesterKey, attestation.Claims{
			Attester: env.AttesterID, Kind: attestation.TestNegative, At: t0.Unix(),
			Expires: t0.Add(48 * time.Hour).Unix(), ID: id, Hint: "ZZ1970",
		})
		if err != nil {
			t.Fatal(err)
		}
		// Each with a wallet secret: only a keyed hash of it may be stored.
		secret := bytes.Repeat([]byte{byte(0xA0 + n)}, 32)
		if status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att},
			Secret: base64.RawURLEncoding.EncodeToString(secret)}); status != 200 {
			t.Fatalf("redeem with a secret: %d %s", status, raw)
		}
		needles = append(needles, forensic.Redemption(id, att, secret)...)
	}
	needles = append(needles, forensic.Pattern{What: "hint", Bytes: []byte("ZZ1970")})

	// An admin action whose audit entry carries a marker.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	const labMarker = "AUDIT-MARKER-LAB"
	if err := env.Issuer.AddAttester(ctx, "forensic-admin", labMarker, pub); err != nil {
		t.Fatal(err)
	}
	if err := env.Issuer.RemoveAttester(ctx, "forensic-admin", labMarker); err != nil {
		t.Fatal(err)
	}
	keys, err := env.DB.SigningKeys(ctx)
	if err != nil || len(keys) == 0 {
		t.Fatalf("signing keys: %v", err)
	}
	sealedKeys := map[string][]byte{}
	for _, k := range keys {
		needles = append(needles, forensic.Pattern{What: "signing key seed " + k.ID, Bytes: k.Private.Seed()},
			forensic.Pattern{What: "signing key seed b64 " + k.ID, Bytes: []byte(base64.StdEncoding.EncodeToString(k.Private.Seed())[:40])})
		sealedKeys[k.ID] = issuertest.SealedKeyOnDisk(t, env.Dir, k.ID)
	}
	auditNeedle := []forensic.Pattern{{What: "audit marker", Bytes: []byte(labMarker)}}

	// Control: before the deadlines the audit entry and the keys are there,
	// so the search below can fail.
	before := forensic.Files(t, env.Dir)
	if hits := forensic.Find(before, auditNeedle); len(hits) == 0 {
		t.Fatal("control: the audit marker is not in the data directory before its deadline")
	}
	for _, k := range keys {
		if len(sealedKeys[k.ID]) == 0 || len(forensic.Find(before, []forensic.Pattern{{What: "sealed key", Bytes: sealedKeys[k.ID]}})) == 0 {
			t.Fatalf("control: sealed key %s not found before its deadline", k.ID)
		}
	}
	// Nothing of the attestations is ever written, even before the sweep,
	// and the keys are sealed: no private key byte either.
	if hits := forensic.Find(before, needles); len(hits) > 0 {
		t.Fatalf("before any deadline, the data directory holds: %v", hits)
	}
	for id, b := range sealedKeys {
		needles = append(needles, forensic.Pattern{What: "sealed signing key " + id, Bytes: b})
	}

	// Past every deadline: audit (365d) and the keys (30d + 30d) included.
	env.Clock.Advance(400 * 24 * time.Hour)
	if err := env.Issuer.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := env.Issuer.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Compacted {
		t.Fatalf("sweep deleted %v but did not compact", st.Deleted)
	}
	needles = append(needles, auditNeedle...)
	after := forensic.Files(t, env.Dir)
	if hits := forensic.Find(after, needles); len(hits) > 0 {
		t.Fatalf("after the deadlines and a sweep, the data directory still holds: %v", hits)
	}
	// No epoch key survives for an epoch that has ended.
	for path := range after {
		if filepath.Base(filepath.Dir(path)) == "epochs" {
			t.Fatalf("epoch key %s survives its epoch", filepath.Base(path))
		}
	}
	// No API returns what was swept: the audit log no longer lists the
	// entries, and the replay record is gone (the same attestation would
	// now be refused as expired, never as redeemed).
	entries, err := env.Issuer.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if bytes.Contains([]byte(e.Detail), []byte(labMarker)) {
			t.Fatalf("audit entry past its deadline still listed: %+v", e)
		}
	}
	// And the inventory agrees: no replay records, no counts.
	cats, _, err := env.Issuer.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cats {
		if (c.Name == "replay_records" || c.Name == "aggregate_counts") && c.Count != 0 {
			t.Fatalf("inventory after the sweep: %s has %d", c.Name, c.Count)
		}
	}
}
