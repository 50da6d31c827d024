package boltstore

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

// pattern is a byte string a disk thief must not find after the deadline.
type pattern struct {
	what  string
	bytes []byte
}

func hits(t *testing.T, dir string, ps []pattern) []string {
	t.Helper()
	fps := make([]forensic.Pattern, len(ps))
	for i, p := range ps {
		fps[i] = forensic.Pattern{What: p.what, Bytes: p.bytes}
	}
	return forensic.Hits(t, dir, fps)
}

// recomputeReplayKey derives a record key the way a thief holding the
// epoch key file would, independently of the store's code.
func recomputeReplayKey(t *testing.T, dir string, epochSeconds int64, attester, id string, deadline time.Time) []byte {
	t.Helper()
	sec := deadline.Unix()
	epoch := (sec + epochSeconds - 1) / epochSeconds * epochSeconds
	key := partitionKey(t, dir, epoch)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(attester + "\x00" + id))
	// The record hash alone: wherever the store puts it, it must go.
	return m.Sum(nil)[:16]
}

// partitionKey unseals a partition's key file with the tests' KEK, as a
// thief holding both the disk and the KEK would.
func partitionKey(t *testing.T, dir string, end int64) []byte {
	t.Helper()
	sealed, err := os.ReadFile(filepath.Join(dir, "replay", strconv.FormatInt(end, 10)+".key"))
	if err != nil {
		t.Fatalf("partition key for %d: %v", end, err)
	}
	key, err := testKEK.Open(sealed, []byte("healthcode/replay-partition/"+strconv.FormatInt(end, 10)))
	if err != nil {
		t.Fatalf("unseal partition key %d: %v", end, err)
	}
	return key
}

// TestForensicNothingRecoverableAfterSweep is invariant 5 from a disk
// thief's side: once past the deadline and swept, no file in the data
// directory holds any trace of the expired records.
func TestForensicNothingRecoverableAfterSweep(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	const attester = "lab-forensic"
	due := t0.Add(72 * time.Hour)
	live := t0.Add(30 * 24 * time.Hour)

	var secret, kept []pattern
	var ids []string
	for i := 1; i <= 50; i++ {
		id := fmt.Sprintf("FORENSIC-MARKER-%04d", i)
		ids = append(ids, id)
		sum := sha256.Sum256([]byte(id))
		secret = append(secret,
			pattern{"id " + id, []byte(id)},
			pattern{"sha256 of " + id, sum[:]},
		)
	}
	// Several redemptions of several attestations each, with colours.
	for i := 0; i < len(ids); i += 5 {
		r := redemption(attester, due, ids[i:i+5]...)
		r.Colour = policy.Colours[i%3]
		r.CountDeadline = due
		if err := errOf(s.Redeem(ctx, r)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 20; i++ {
		if err := errOf(s.Redeem(ctx, redemption(attester, live, fmt.Sprintf("LIVE-%04d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	const detail = "FORENSIC-AUDIT-DETAIL: attester 9c1e added"
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "attester.add", Detail: detail}, due); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: t0, Admin: "ops", Action: "policy.set", Detail: "LIVE-AUDIT-DETAIL"}, live); err != nil {
		t.Fatal(err)
	}
	priv := putKey(t, s, "k-retired", due)
	seed := priv.Seed()
	const oldPolicy = `{"version":1,"note":"FORENSIC-POLICY-OLD"}`
	if err := s.PutPolicy(ctx, issuer.PolicyRecord{Version: 1, Raw: []byte(oldPolicy), Set: t0}, due); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPolicy(ctx, issuer.PolicyRecord{Version: 2, Raw: []byte(`{"version":2}`), Set: t0}, due); err != nil {
		t.Fatal(err)
	}
	// Churn: redemptions and sweeps of other records before the deadline,
	// so the expired records are copied through freed pages many times.
	for round := range 5 {
		clock.Set(t0.Add(time.Duration(round) * time.Hour))
		if err := errOf(s.Redeem(ctx, redemption("churn", t0.Add(time.Duration(round)*time.Hour+time.Minute), fmt.Sprint("churn-", round)))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sweep(ctx, t0.Add(time.Duration(round+1)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}

	epochDue := s.epochOf(due.Unix())
	sealedKey, err := os.ReadFile(s.partitionPath(epochDue, ".key"))
	if err != nil {
		t.Fatal(err)
	}
	rawKey := partitionKey(t, dir, epochDue)
	// Sealed under the KEK: the raw key is never on disk.
	if h := hits(t, dir, []pattern{{"raw partition key", rawKey}}); len(h) != 0 {
		t.Fatalf("raw partition key on disk: %v", h)
	}
	var recordKeys []pattern
	for _, id := range ids {
		recordKeys = append(recordKeys, pattern{"record key of " + id, recomputeReplayKey(t, dir, s.epoch, attester, id, due)})
	}
	var liveKeys []pattern
	for i := 1; i <= 20; i++ {
		id := fmt.Sprintf("LIVE-%04d", i)
		liveKeys = append(liveKeys, pattern{"record key of " + id, recomputeReplayKey(t, dir, s.epoch, attester, id, live)})
	}
	content := []pattern{
		{"audit detail", []byte(detail)},
		{"sealed signing key (JSON base64)", []byte(base64.StdEncoding.EncodeToString(sealedSigningKey(t, s, "k-retired")[:30]))},
		{"old policy", []byte("FORENSIC-POLICY-OLD")},
		{"sealed partition key", sealedKey},
	}
	kept = append(liveKeys, pattern{"live audit detail", []byte("LIVE-AUDIT-DETAIL")})

	// Never stored, not even before the deadline: ids, their hashes, the attester.
	never := append(append([]pattern(nil), secret...), pattern{"attester", []byte(attester)})
	if h := hits(t, dir, never); len(h) != 0 {
		t.Fatalf("stored although it never should be: %v", h)
	}
	// Control: before the deadline the records are there and the scanner
	// finds them, so the final assertion can fail.
	for _, p := range append(append(append([]pattern(nil), recordKeys...), content...), kept...) {
		if len(hits(t, dir, []pattern{p})) == 0 {
			t.Fatalf("control: %s not found before the sweep", p.what)
		}
	}

	// Freed pages: right after the deletions of the main file's records
	// commit, before compaction, the bytes are still in the file. This is
	// why the sweep compacts it. (Replay records leave with their whole
	// partition file.)
	var beforeCompaction []string
	testHook = func(stage string) {
		if stage == "before-compact" {
			beforeCompaction = hits(t, dir, content[:3])
		}
	}
	t.Cleanup(func() { testHook = nil })

	clock.Set(due.Add(time.Hour))
	st, err := s.Sweep(ctx, time.Unix(epochDue, 0))
	if err != nil {
		t.Fatal(err)
	}
	testHook = nil
	want := map[string]int{
		// The due partition, and the churn's: both end by then.
		issuer.CategoryReplay: len(ids) + 5, issuer.CategoryCounts: 3, issuer.CategoryAudit: 1,
		issuer.CategorySigningKeys: 1, issuer.CategoryPolicyHistory: 1,
	}
	if fmt.Sprint(st.Deleted) != fmt.Sprint(want) || !st.Compacted {
		t.Fatalf("sweep = %+v, want %v and compacted", st, want)
	}
	t.Logf("before compaction, %d of %d expired patterns were still in freed pages: %v", len(beforeCompaction), 3, beforeCompaction)
	if len(beforeCompaction) == 0 {
		t.Error("control: deleted records were not found in freed pages before compaction; the scan may be blind")
	}

	// The raw seed is checked too, whatever encoding the file uses.
	all := append(append(append([]pattern(nil), never...), recordKeys...), content...)
	all = append(all, pattern{"signing key seed (raw)", seed}, pattern{"signing key (raw)", priv}, pattern{"raw partition key", rawKey})
	if h := hits(t, dir, all); len(h) != 0 {
		t.Fatalf("recoverable after the sweep: %v", h)
	}
	// What is still within its deadline is still there and still works.
	for _, p := range kept {
		if len(hits(t, dir, []pattern{p})) == 0 {
			t.Fatalf("%s lost by the sweep", p.what)
		}
	}
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption(attester, live, "LIVE-0001"))), 0)

	// And after closing: the file at rest is the same story.
	s.Close()
	if h := hits(t, dir, all); len(h) != 0 {
		t.Fatalf("recoverable after close: %v", h)
	}
}

// TestForensicAdminDeletionsAreCompacted: records an administrator deletes
// or replaces (an admin token hash, an attester, the bundle key) also leave
// the file at the next sweep, even when nothing else falls due.
func TestForensicAdminDeletionsAreCompacted(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	ctx := context.Background()
	hash := sha256.Sum256([]byte("FORENSIC-ADMIN-TOKEN"))
	if err := s.PutAdminToken(ctx, issuer.AdminToken{Name: "FORENSIC-ADMIN-NAME", Hash: hash, Created: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAttester(ctx, issuer.Attester{ID: "FORENSIC-ATTESTER-ID", Public: make([]byte, 32), Added: t0}); err != nil {
		t.Fatal(err)
	}
	_, oldKey, _ := ed25519.GenerateKey(rand.Reader)
	_, newKey, _ := ed25519.GenerateKey(rand.Reader)
	if err := s.PutBundleKey(ctx, oldKey); err != nil {
		t.Fatal(err)
	}
	gone := []pattern{
		{"admin token hash (JSON base64)", []byte(base64.StdEncoding.EncodeToString(hash[:]))},
		{"admin token name", []byte("FORENSIC-ADMIN-NAME")},
		{"attester id", []byte("FORENSIC-ATTESTER-ID")},
		{"old bundle key, sealed", sealedBundleKey(t, s)},
	}
	for _, p := range gone {
		if len(hits(t, dir, []pattern{p})) == 0 {
			t.Fatalf("control: %s not found before deletion", p.what)
		}
	}
	if err := s.DeleteAdminToken(ctx, "FORENSIC-ADMIN-NAME"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAttester(ctx, "FORENSIC-ATTESTER-ID"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBundleKey(ctx, newKey); err != nil {
		t.Fatal(err)
	}
	st, err := s.Sweep(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if sum(st.Deleted) != 0 || !st.Compacted {
		t.Fatalf("sweep = %+v, want nothing due but a compaction", st)
	}
	if h := hits(t, dir, append(gone, pattern{"raw hash", hash[:]})); len(h) != 0 {
		t.Fatalf("recoverable after deletion and sweep: %v", h)
	}
	if k, err := s.BundleKey(ctx); err != nil || !k.Equal(newKey) {
		t.Fatalf("bundle key after compaction: %v", err)
	}
}

// TestForensicDroppedPartitionLeavesNothing: once a partition is dropped,
// a byte search of the data directory finds nothing of its records (their
// hashes, the keyed hashes of the wallets' secrets) nor of its key, sealed
// or raw; the partition still live keeps its own.
func TestForensicDroppedPartitionLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	due, live := t0.Add(5*time.Hour), t0.Add(80*time.Hour)
	dueEnd, liveEnd := s.epochOf(due.Unix()), s.epochOf(live.Unix())
	secret := []byte("FORENSIC-WALLET-SECRET-32-BYTES!")
	for i := range 20 {
		r := withSecret(redemption("lab", due, fmt.Sprintf("DROP-%d", i)), secret, 2)
		if i%2 == 0 {
			// Half of them with a companion in the live partition: their
			// intent named both record hashes in the main file.
			r.Replay = append(r.Replay, issuer.ReplayKey{Attester: "lab", ID: fmt.Sprintf("KEEP-%d", i), Deadline: live, Secret: secret})
		} else if err := errOf(s.Redeem(ctx, withSecret(redemption("lab", live, fmt.Sprintf("KEEP-%d", i)), secret, 2))); err != nil {
			t.Fatal(err)
		}
		if err := errOf(s.Redeem(ctx, r)); err != nil {
			t.Fatal(err)
		}
	}
	patterns := func(end int64, prefix string) []pattern {
		key := partitionKey(t, dir, end)
		sealed, err := os.ReadFile(s.partitionPath(end, ".key"))
		if err != nil {
			t.Fatal(err)
		}
		ps := []pattern{{prefix + " sealed key", sealed}}
		for i := range 20 {
			id := fmt.Sprintf("%s-%d", prefix, i)
			ps = append(ps,
				pattern{"record hash of " + id, recordHash(key, "lab", id)},
				pattern{"secret hash of " + id, secretHash(key, "lab", id, secret)})
		}
		return ps
	}
	dropped, kept := patterns(dueEnd, "DROP"), patterns(liveEnd, "KEEP")
	rawDue := partitionKey(t, dir, dueEnd)
	never := []pattern{{"secret", secret}, {"raw key", rawDue}, {"raw live key", partitionKey(t, dir, liveEnd)}}
	for _, p := range append(append([]pattern(nil), dropped...), kept...) {
		if len(hits(t, dir, []pattern{p})) == 0 {
			t.Fatalf("control: %s not found before the drop", p.what)
		}
	}
	if h := hits(t, dir, never); len(h) != 0 {
		t.Fatalf("stored although it never should be: %v", h)
	}
	clock.Set(time.Unix(dueEnd, 0))
	st, err := s.Sweep(ctx, time.Unix(dueEnd, 0))
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted[issuer.CategoryReplay] != 20 {
		t.Fatalf("sweep %+v, want the 20 records of one partition", st)
	}
	if h := hits(t, dir, append(append([]pattern(nil), dropped...), never...)); len(h) != 0 {
		t.Fatalf("recoverable after the partition was dropped: %v", h)
	}
	for _, p := range kept {
		if len(hits(t, dir, []pattern{p})) == 0 {
			t.Fatalf("%s lost with another partition", p.what)
		}
	}
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", live, "KEEP-3"))), 0)
}
