package storetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

// OpenState returns a new, empty issuer.StateStore that reads the time
// from clock. It registers the store's closing with t.Cleanup. Stores of
// one RunState may share a backing server, but two calls must not see
// each other's records.
type OpenState func(t *testing.T, clock issuer.Clock) issuer.StateStore

// day is a retention step: deadlines lie days after the suite's start, so
// that an engine that expires by the wall clock (a lease) holds them for
// the whole run.
const day = 24 * time.Hour

// stateEnv is one case's state store and clock.
type stateEnv struct {
	t     *testing.T
	ctx   context.Context
	clock *Clock
	store issuer.StateStore
	t0    time.Time
}

func newStateEnv(t *testing.T, open OpenState) *stateEnv {
	t0 := time.Now().UTC().Truncate(time.Hour)
	c := &Clock{t: t0}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &stateEnv{t: t, ctx: ctx, clock: c, store: open(t, c), t0: t0}
}

// RunState runs every case of the issuer.StateStore suite, each on a store
// of its own. What it holds an adapter to, besides the interface's
// comments:
//
//   - listings are compared as sets (the issuer sorts them); the audit log
//     alone has an order: oldest Time first, then append order;
//   - every field round-trips (times by Equal, the private keys whole);
//   - Inventory has a row for admin_audit, signing_keys, policy_history
//     and configuration: Count, Oldest (the earliest write hour, by the
//     store's clock, of a record held; a replaced policy keeps its own)
//     and NextDeadline (the earliest deadline held); a withdrawal is a
//     signing_keys record until its Until; configuration has no deadline
//     and counts at least the attesters, tokens and policy held;
//   - Sweep(now) deletes every record whose deadline is at or before now,
//     whatever the wall clock says, and SweepStats.Deleted counts them
//     exactly per category (zero for a category it names but holds none
//     of);
//   - refused input (a missing id, deadline or time, a key of the wrong
//     size, a zero token hash, policy version 0 or an empty document, a
//     blank audit action, Sweep without now) is an error other than
//     ErrNotFound and writes nothing; an unknown id to delete or withdraw
//     is ErrNotFound and writes nothing;
//   - a cancelled ctx fails every call with an error that errors.Is
//     context.Canceled, and writes nothing.
func RunState(t *testing.T, open OpenState) {
	cases := []struct {
		name string
		f    func(*stateEnv)
	}{
		{"SigningKeysRoundTrip", testSigningKeysRoundTrip},
		{"WithdrawSigningKey", testWithdrawSigningKey},
		{"BundleKey", testBundleKey},
		{"BundleSequenceIncreases", testBundleSequenceIncreases},
		{"BundleSequenceConcurrent", testBundleSequenceConcurrent},
		{"Attesters", testAttesters},
		{"AdminTokens", testAdminTokens},
		{"PolicyAndHistory", testPolicyAndHistory},
		{"AuditOldestFirst", testAuditOldestFirst},
		{"Inventory", testInventory},
		{"SweepDeletesWhatIsDue", testSweepDeletesWhatIsDue},
		{"SweepCatchesUp", testSweepCatchesUp},
		{"InvalidInputWritesNothing", testStateInvalidInput},
		{"CancelledContext", testStateCancelledContext},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.f(newStateEnv(t, open)) })
	}
}

// at is t0 plus d.
func (e *stateEnv) at(d time.Duration) time.Time { return e.t0.Add(d) }

func (e *stateEnv) ok(what string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

func (e *stateEnv) notFound(what string, err error) {
	e.t.Helper()
	if !errors.Is(err, issuer.ErrNotFound) {
		e.t.Fatalf("%s: got %v, want issuer.ErrNotFound", what, err)
	}
}

// signingKey is a fresh key published at created, destroyed at destroy.
func (e *stateEnv) signingKey(id string, created, destroy time.Time) issuer.SigningKey {
	e.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	return issuer.SigningKey{
		ID: id, Private: priv, Created: created, ActiveAt: created.Add(time.Hour),
		NotBefore: created.Add(30 * time.Minute), NotAfter: destroy.Add(-day), DestroyAt: destroy,
	}
}

func (e *stateEnv) putKey(k issuer.SigningKey) {
	e.t.Helper()
	e.ok("PutSigningKey "+k.ID, e.store.PutSigningKey(e.ctx, k))
}

func (e *stateEnv) putPolicy(version int, set, historyDeadline time.Time) issuer.PolicyRecord {
	e.t.Helper()
	rec := issuer.PolicyRecord{Version: version, Raw: fmt.Appendf(nil, `{"version":%d}`, version), Set: set}
	e.ok(fmt.Sprintf("PutPolicy %d", version), e.store.PutPolicy(e.ctx, rec, historyDeadline))
	return rec
}

func (e *stateEnv) appendAudit(action string, at, deadline time.Time) issuer.AuditEntry {
	e.t.Helper()
	a := issuer.AuditEntry{Time: at, Admin: "ops", Action: action, Detail: "detail of " + action}
	e.ok("AppendAudit "+action, e.store.AppendAudit(e.ctx, a, deadline))
	return a
}

// --- comparisons -------------------------------------------------------------

func sameKey(a, b issuer.SigningKey) bool {
	return a.ID == b.ID && a.Private.Equal(b.Private) && a.Created.Equal(b.Created) &&
		a.ActiveAt.Equal(b.ActiveAt) && a.NotBefore.Equal(b.NotBefore) &&
		a.NotAfter.Equal(b.NotAfter) && a.DestroyAt.Equal(b.DestroyAt)
}

// keyIDs names keys without their private parts, for failure messages.
func keyIDs(ks []issuer.SigningKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

// wantKeys checks that the signing keys held are want, in any order,
// every field (the private part included) round-tripped.
func (e *stateEnv) wantKeys(want ...issuer.SigningKey) {
	e.t.Helper()
	got, err := e.store.SigningKeys(e.ctx)
	e.ok("SigningKeys", err)
	if len(got) != len(want) {
		e.t.Fatalf("SigningKeys: %v, want %v", keyIDs(got), keyIDs(want))
	}
	for _, w := range want {
		i := slices.IndexFunc(got, func(k issuer.SigningKey) bool { return k.ID == w.ID })
		if i < 0 {
			e.t.Fatalf("SigningKeys: %v, want %v", keyIDs(got), keyIDs(want))
		}
		if !sameKey(got[i], w) {
			e.t.Fatalf("signing key %s did not round-trip (a field or the private part differs)", w.ID)
		}
		if !got[i].Public().Equal(w.Public()) {
			e.t.Fatalf("signing key %s: public half differs", w.ID)
		}
	}
}

func (e *stateEnv) wantWithdrawn(want ...issuer.WithdrawnKey) {
	e.t.Helper()
	got, err := e.store.WithdrawnKeys(e.ctx)
	e.ok("WithdrawnKeys", err)
	sort.Slice(got, func(a, b int) bool { return got[a].ID < got[b].ID })
	sort.Slice(want, func(a, b int) bool { return want[a].ID < want[b].ID })
	if len(got) != len(want) {
		e.t.Fatalf("WithdrawnKeys: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].ID != want[i].ID || !got[i].At.Equal(want[i].At) || !got[i].Until.Equal(want[i].Until) {
			e.t.Fatalf("WithdrawnKeys: %+v, want %+v", got, want)
		}
	}
}

func (e *stateEnv) wantAttesters(want ...issuer.Attester) {
	e.t.Helper()
	got, err := e.store.Attesters(e.ctx)
	e.ok("Attesters", err)
	sort.Slice(got, func(a, b int) bool { return got[a].ID < got[b].ID })
	sort.Slice(want, func(a, b int) bool { return want[a].ID < want[b].ID })
	if len(got) != len(want) {
		e.t.Fatalf("Attesters: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].ID != want[i].ID || !got[i].Public.Equal(want[i].Public) || !got[i].Added.Equal(want[i].Added) {
			e.t.Fatalf("Attesters: %+v, want %+v", got, want)
		}
	}
}

func (e *stateEnv) wantAdminTokens(want ...issuer.AdminToken) {
	e.t.Helper()
	got, err := e.store.AdminTokens(e.ctx)
	e.ok("AdminTokens", err)
	sort.Slice(got, func(a, b int) bool { return got[a].Name < got[b].Name })
	sort.Slice(want, func(a, b int) bool { return want[a].Name < want[b].Name })
	if len(got) != len(want) {
		e.t.Fatalf("AdminTokens: %d held, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Hash != want[i].Hash || !got[i].Created.Equal(want[i].Created) {
			e.t.Fatalf("admin token %d: %q created %s, want %q created %s (or the hash differs)",
				i, got[i].Name, got[i].Created, want[i].Name, want[i].Created)
		}
	}
}

func (e *stateEnv) wantPolicy(want issuer.PolicyRecord) {
	e.t.Helper()
	got, err := e.store.Policy(e.ctx)
	e.ok("Policy", err)
	if got.Version != want.Version || !bytes.Equal(got.Raw, want.Raw) || !got.Set.Equal(want.Set) {
		e.t.Fatalf("Policy: version %d %q set %s, want version %d %q set %s", got.Version, got.Raw, got.Set, want.Version, want.Raw, want.Set)
	}
}

func (e *stateEnv) wantAudit(want ...issuer.AuditEntry) {
	e.t.Helper()
	got, err := e.store.Audit(e.ctx)
	e.ok("Audit", err)
	if len(got) != len(want) {
		e.t.Fatalf("Audit: %v, want %v", actions(got), actions(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.Time.Equal(w.Time) || g.Admin != w.Admin || g.Action != w.Action || g.Detail != w.Detail {
			e.t.Fatalf("Audit entry %d: %+v, want %+v (order %v, want %v)", i, g, w, actions(got), actions(want))
		}
	}
}

func actions(es []issuer.AuditEntry) []string {
	var out []string
	for _, a := range es {
		out = append(out, a.Action)
	}
	return out
}

// row returns the inventory row of a category; the store must report
// every category it holds records of.
func (e *stateEnv) row(name string) issuer.CategoryStat {
	e.t.Helper()
	inv, err := e.store.Inventory(e.ctx)
	e.ok("Inventory", err)
	for _, c := range inv {
		if c.Name == name {
			return c
		}
	}
	e.t.Fatalf("Inventory has no row %q", name)
	return issuer.CategoryStat{}
}

// wantRow checks one inventory row: the count, the earliest write hour
// held and the next deadline (zero time: none).
func (e *stateEnv) wantRow(name string, count int, oldest, next time.Time) {
	e.t.Helper()
	c := e.row(name)
	show := func(p *time.Time) string {
		if p == nil {
			return "none"
		}
		return p.UTC().Format(time.RFC3339)
	}
	match := func(p *time.Time, want time.Time) bool {
		if want.IsZero() {
			return p == nil
		}
		return p != nil && p.Equal(want)
	}
	if c.Count != count || !match(c.Oldest, oldest) || !match(c.NextDeadline, next) {
		wo, wn := "none", "none"
		if !oldest.IsZero() {
			wo = oldest.UTC().Format(time.RFC3339)
		}
		if !next.IsZero() {
			wn = next.UTC().Format(time.RFC3339)
		}
		e.t.Fatalf("inventory %s: count %d, oldest %s, next deadline %s; want %d, %s, %s",
			name, c.Count, show(c.Oldest), show(c.NextDeadline), count, wo, wn)
	}
}

// stateCategories are the categories with deadlines a StateStore holds.
var stateCategories = []string{issuer.CategoryAudit, issuer.CategorySigningKeys, issuer.CategoryPolicyHistory}

// wantSwept checks a sweep's counts: want per category, zero for every
// other category the stats name.
func (e *stateEnv) wantSwept(st issuer.SweepStats, want map[string]int) {
	e.t.Helper()
	for _, name := range stateCategories {
		if st.Deleted[name] != want[name] {
			e.t.Fatalf("Sweep deleted %v, want %v", st.Deleted, want)
		}
	}
	for name, n := range st.Deleted {
		if n != want[name] {
			e.t.Fatalf("Sweep deleted %v, want %v", st.Deleted, want)
		}
	}
}

// snapshot is everything a StateStore lets one read, but the bundle
// sequence (reading it moves it).
type snapshot struct {
	keys      []issuer.SigningKey
	withdrawn []issuer.WithdrawnKey
	bundleKey ed25519.PrivateKey
	attesters []issuer.Attester
	tokens    []issuer.AdminToken
	policy    issuer.PolicyRecord
	audit     []issuer.AuditEntry
	inventory []issuer.CategoryStat
}

func (e *stateEnv) snapshot() snapshot {
	e.t.Helper()
	var s snapshot
	var err error
	s.keys, err = e.store.SigningKeys(e.ctx)
	e.ok("SigningKeys", err)
	sort.Slice(s.keys, func(a, b int) bool { return s.keys[a].ID < s.keys[b].ID })
	s.withdrawn, err = e.store.WithdrawnKeys(e.ctx)
	e.ok("WithdrawnKeys", err)
	sort.Slice(s.withdrawn, func(a, b int) bool { return s.withdrawn[a].ID < s.withdrawn[b].ID })
	s.bundleKey, err = e.store.BundleKey(e.ctx)
	if err != nil && !errors.Is(err, issuer.ErrNotFound) {
		e.t.Fatalf("BundleKey: %v", err)
	}
	s.attesters, err = e.store.Attesters(e.ctx)
	e.ok("Attesters", err)
	sort.Slice(s.attesters, func(a, b int) bool { return s.attesters[a].ID < s.attesters[b].ID })
	s.tokens, err = e.store.AdminTokens(e.ctx)
	e.ok("AdminTokens", err)
	sort.Slice(s.tokens, func(a, b int) bool { return s.tokens[a].Name < s.tokens[b].Name })
	s.policy, err = e.store.Policy(e.ctx)
	if err != nil && !errors.Is(err, issuer.ErrNotFound) {
		e.t.Fatalf("Policy: %v", err)
	}
	s.audit, err = e.store.Audit(e.ctx)
	e.ok("Audit", err)
	s.inventory, err = e.store.Inventory(e.ctx)
	e.ok("Inventory", err)
	sort.Slice(s.inventory, func(a, b int) bool { return s.inventory[a].Name < s.inventory[b].Name })
	return s
}

// wantUnchanged checks that nothing readable changed since before. It
// names the part that changed, never its content (keys are secret).
func (e *stateEnv) wantUnchanged(what string, before snapshot) {
	e.t.Helper()
	after := e.snapshot()
	var changed []string
	if len(before.keys) != len(after.keys) {
		changed = append(changed, "signing keys")
	} else {
		for i := range before.keys {
			if !sameKey(before.keys[i], after.keys[i]) {
				changed = append(changed, "signing keys")
				break
			}
		}
	}
	for _, part := range []struct {
		name      string
		was, this any
	}{
		{"withdrawn keys", fmt.Sprint(before.withdrawn), fmt.Sprint(after.withdrawn)},
		{"bundle key", before.bundleKey, after.bundleKey},
		{"attesters", fmt.Sprint(before.attesters), fmt.Sprint(after.attesters)},
		{"admin tokens", fmt.Sprint(before.tokens), fmt.Sprint(after.tokens)},
		{"policy", fmt.Sprint(before.policy), fmt.Sprint(after.policy)},
		{"audit", fmt.Sprint(before.audit), fmt.Sprint(after.audit)},
		{"inventory", inventoryText(before.inventory), inventoryText(after.inventory)},
	} {
		if !reflect.DeepEqual(part.was, part.this) {
			changed = append(changed, part.name)
		}
	}
	if len(changed) > 0 {
		e.t.Fatalf("%s changed the store: %s", what, strings.Join(changed, ", "))
	}
}

func inventoryText(inv []issuer.CategoryStat) string {
	var b strings.Builder
	for _, c := range inv {
		fmt.Fprintf(&b, "%s %d", c.Name, c.Count)
		for _, p := range []*time.Time{c.Oldest, c.NextDeadline} {
			if p != nil {
				fmt.Fprintf(&b, " %d", p.Unix())
			} else {
				b.WriteString(" -")
			}
		}
		b.WriteString("; ")
	}
	return b.String()
}

// --- cases -------------------------------------------------------------------

func testSigningKeysRoundTrip(e *stateEnv) {
	e.wantKeys()
	k1 := e.signingKey("k1", e.at(0), e.at(20*day))
	k0 := e.signingKey("k0", e.at(0), e.at(10*day))
	e.putKey(k1)
	e.putKey(k0)
	e.wantKeys(k0, k1)
	// Putting k1 again replaces it whole, whether its DestroyAt moves
	// later or earlier: no stale copy is listed.
	later := e.signingKey("k1", e.at(time.Hour), e.at(40*day))
	e.putKey(later)
	e.wantKeys(k0, later)
	earlier := e.signingKey("k1", e.at(2*time.Hour), e.at(5*day))
	e.putKey(earlier)
	e.wantKeys(k0, earlier)
	e.wantRow(issuer.CategorySigningKeys, 2, e.t0, earlier.DestroyAt)
}

func testWithdrawSigningKey(e *stateEnv) {
	k1 := e.signingKey("k1", e.at(0), e.at(20*day))
	k2 := e.signingKey("k2", e.at(0), e.at(30*day))
	e.putKey(k1)
	e.putKey(k2)
	e.wantWithdrawn()

	before := e.snapshot()
	e.notFound("withdraw an unknown key", e.store.WithdrawSigningKey(e.ctx, issuer.WithdrawnKey{ID: "k9", At: e.at(0), Until: e.at(5 * day)}))
	e.wantUnchanged("withdrawing an unknown key", before)

	w1 := issuer.WithdrawnKey{ID: "k1", At: e.at(90 * time.Minute), Until: k1.NotAfter}
	e.ok("WithdrawSigningKey k1", e.store.WithdrawSigningKey(e.ctx, w1))
	e.wantKeys(k2)
	e.wantWithdrawn(w1)
	// Deleted at once and withdrawn: a second withdrawal finds no key.
	before = e.snapshot()
	e.notFound("withdraw k1 again", e.store.WithdrawSigningKey(e.ctx, issuer.WithdrawnKey{ID: "k1", At: e.at(2 * time.Hour), Until: e.at(50 * day)}))
	e.wantUnchanged("withdrawing a withdrawn key", before)

	w2 := issuer.WithdrawnKey{ID: "k2", At: e.at(3 * time.Hour), Until: k2.NotAfter}
	e.ok("WithdrawSigningKey k2", e.store.WithdrawSigningKey(e.ctx, w2))
	e.wantKeys()
	e.wantWithdrawn(w1, w2)
	// A withdrawal is a record of the signing-keys category until Until.
	e.wantRow(issuer.CategorySigningKeys, 2, e.t0, w1.Until)
}

func testBundleKey(e *stateEnv) {
	_, err := e.store.BundleKey(e.ctx)
	e.notFound("BundleKey before the first start", err)
	// The issuer puts a bundle key once, when none is stored; a second put
	// is the adapter's own (bbolt replaces, etcd keeps the first of
	// replicas starting together), so the suite makes none.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ok("PutBundleKey", e.store.PutBundleKey(e.ctx, priv))
	for i := 0; i < 2; i++ {
		got, err := e.store.BundleKey(e.ctx)
		e.ok("BundleKey", err)
		if !got.Equal(priv) {
			e.t.Fatal("BundleKey did not round-trip")
		}
	}
}

func testBundleSequenceIncreases(e *stateEnv) {
	var last uint64
	for i := 0; i < 5; i++ {
		n, err := e.store.NextBundleSequence(e.ctx)
		e.ok("NextBundleSequence", err)
		if i > 0 && n <= last {
			e.t.Fatalf("NextBundleSequence returned %d after %d", n, last)
		}
		if n == 0 {
			e.t.Fatal("NextBundleSequence returned 0, which no bundle can be above")
		}
		last = n
	}
}

func testBundleSequenceConcurrent(e *stateEnv) {
	first, err := e.store.NextBundleSequence(e.ctx)
	e.ok("NextBundleSequence", err)
	const each = 4
	got := make([][]uint64, racers)
	errs := race(racers, func(i int) error {
		for j := 0; j < each; j++ {
			n, err := e.store.NextBundleSequence(e.ctx)
			if err != nil {
				return err
			}
			got[i] = append(got[i], n)
		}
		return nil
	})
	seen := map[uint64]int{}
	var highest uint64
	for i, err := range errs {
		e.ok(fmt.Sprintf("NextBundleSequence in goroutine %d", i), err)
		for j, n := range got[i] {
			if n <= first {
				e.t.Fatalf("goroutine %d got %d, not above %d returned before", i, n, first)
			}
			if j > 0 && n <= got[i][j-1] {
				e.t.Fatalf("goroutine %d got %d after %d", i, n, got[i][j-1])
			}
			if other, dup := seen[n]; dup {
				e.t.Fatalf("goroutines %d and %d both got %d", other, i, n)
			}
			seen[n] = i
			highest = max(highest, n)
		}
	}
	after, err := e.store.NextBundleSequence(e.ctx)
	e.ok("NextBundleSequence", err)
	if after <= highest {
		e.t.Fatalf("NextBundleSequence returned %d after %d", after, highest)
	}
}

func testAttesters(e *stateEnv) {
	e.wantAttesters()
	pub := func() ed25519.PublicKey {
		p, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			e.t.Fatal(err)
		}
		return p
	}
	a := issuer.Attester{ID: "lab-a", Public: pub(), Added: e.at(0)}
	b := issuer.Attester{ID: "lab-b", Public: pub(), Added: e.at(time.Hour)}
	// An id that another one starts with is another attester.
	ab := issuer.Attester{ID: "lab-ab", Public: pub(), Added: e.at(time.Hour)}
	for _, x := range []issuer.Attester{a, b, ab} {
		e.ok("PutAttester "+x.ID, e.store.PutAttester(e.ctx, x))
	}
	e.wantAttesters(a, b, ab)
	a2 := issuer.Attester{ID: "lab-a", Public: pub(), Added: e.at(2 * time.Hour)}
	e.ok("PutAttester replacing lab-a", e.store.PutAttester(e.ctx, a2))
	e.wantAttesters(a2, b, ab)
	e.ok("DeleteAttester lab-a", e.store.DeleteAttester(e.ctx, "lab-a"))
	e.wantAttesters(b, ab)
	before := e.snapshot()
	e.notFound("DeleteAttester lab-a again", e.store.DeleteAttester(e.ctx, "lab-a"))
	e.notFound("DeleteAttester of an unknown id", e.store.DeleteAttester(e.ctx, "lab-z"))
	e.notFound("DeleteAttester of an admin token's name", e.store.DeleteAttester(e.ctx, "ops"))
	e.wantUnchanged("deleting absent attesters", before)
	// Attesters and admin tokens are apart: neither listing sees the other.
	e.wantAdminTokens()
}

func testAdminTokens(e *stateEnv) {
	e.wantAdminTokens()
	ops := issuer.AdminToken{Name: "ops", Hash: sha256.Sum256([]byte("token one")), Created: e.at(0)}
	ci := issuer.AdminToken{Name: "ci", Hash: sha256.Sum256([]byte("token two")), Created: e.at(time.Hour)}
	e.ok("PutAdminToken ops", e.store.PutAdminToken(e.ctx, ops))
	e.ok("PutAdminToken ci", e.store.PutAdminToken(e.ctx, ci))
	e.wantAdminTokens(ops, ci)
	ops2 := issuer.AdminToken{Name: "ops", Hash: sha256.Sum256([]byte("token three")), Created: e.at(2 * time.Hour)}
	e.ok("PutAdminToken replacing ops", e.store.PutAdminToken(e.ctx, ops2))
	e.wantAdminTokens(ops2, ci)
	e.wantAttesters()
	e.ok("DeleteAdminToken ops", e.store.DeleteAdminToken(e.ctx, "ops"))
	e.wantAdminTokens(ci)
	before := e.snapshot()
	e.notFound("DeleteAdminToken ops again", e.store.DeleteAdminToken(e.ctx, "ops"))
	e.notFound("DeleteAdminToken of an unknown name", e.store.DeleteAdminToken(e.ctx, "nobody"))
	e.wantUnchanged("deleting absent admin tokens", before)
}

func testPolicyAndHistory(e *stateEnv) {
	_, err := e.store.Policy(e.ctx)
	e.notFound("Policy before one is set", err)
	e.wantRow(issuer.CategoryPolicyHistory, 0, time.Time{}, time.Time{})
	v1 := e.putPolicy(1, e.at(time.Minute), e.at(10*day))
	e.wantPolicy(v1)
	// The first policy replaces none: no history.
	e.wantRow(issuer.CategoryPolicyHistory, 0, time.Time{}, time.Time{})
	// v2 two hours later: v1 moves to history until v2's history deadline,
	// and keeps its own write hour.
	e.clock.Set(e.at(2*time.Hour + 5*time.Minute))
	v2 := e.putPolicy(2, e.at(2*time.Hour+time.Minute), e.at(20*day))
	e.wantPolicy(v2)
	e.wantRow(issuer.CategoryPolicyHistory, 1, e.t0, e.at(20*day))
	// A shorter retention for the next one: the earliest deadline is next.
	e.clock.Set(e.at(3 * time.Hour))
	v3 := e.putPolicy(3, e.at(3*time.Hour), e.at(5*day))
	e.wantPolicy(v3)
	e.wantRow(issuer.CategoryPolicyHistory, 2, e.t0, e.at(5*day))
	// At v3's history deadline, v2 (the one it replaced) goes; v1 stays.
	st, err := e.store.Sweep(e.ctx, e.at(5*day))
	e.ok("Sweep", err)
	e.wantSwept(st, map[string]int{issuer.CategoryPolicyHistory: 1})
	e.wantRow(issuer.CategoryPolicyHistory, 1, e.t0, e.at(20*day))
	e.wantPolicy(v3)
}

func testAuditOldestFirst(e *stateEnv) {
	e.wantAudit()
	// Deadlines out of time order (retention shortened in between), and
	// two entries of the same instant: oldest first, then append order.
	first := e.appendAudit("first", e.at(0), e.at(90*day))
	second := e.appendAudit("second", e.at(time.Minute), e.at(10*day))
	third := e.appendAudit("third", e.at(time.Minute), e.at(5*day))
	fourth := e.appendAudit("fourth", e.at(2*time.Minute), e.at(30*day))
	e.wantAudit(first, second, third, fourth)
	e.wantRow(issuer.CategoryAudit, 4, e.t0, e.at(5*day))
	// Each goes at its own deadline.
	for _, step := range []struct {
		at   time.Duration
		want []issuer.AuditEntry
	}{
		{5 * day, []issuer.AuditEntry{first, second, fourth}},
		{10 * day, []issuer.AuditEntry{first, fourth}},
		{30 * day, []issuer.AuditEntry{first}},
		{90 * day, nil},
	} {
		st, err := e.store.Sweep(e.ctx, e.at(step.at))
		e.ok("Sweep", err)
		e.wantSwept(st, map[string]int{issuer.CategoryAudit: 1})
		e.wantAudit(step.want...)
	}
	e.wantRow(issuer.CategoryAudit, 0, time.Time{}, time.Time{})
}

func testInventory(e *stateEnv) {
	for _, name := range stateCategories {
		e.wantRow(name, 0, time.Time{}, time.Time{})
	}
	cfg := e.row(issuer.CategoryConfiguration)
	if cfg.NextDeadline != nil {
		e.t.Fatalf("configuration has a next deadline %s: it has none", cfg.NextDeadline)
	}
	// Writes in hour 3 and hour 5 of the run: oldest is the earliest write
	// hour held, whatever the minute.
	e.clock.Set(e.at(3*time.Hour + 25*time.Minute))
	e.appendAudit("a1", e.clock.Now(), e.at(8*day))
	e.putKey(e.signingKey("k1", e.clock.Now(), e.at(12*day)))
	e.putPolicy(1, e.clock.Now(), e.at(9*day))
	e.clock.Set(e.at(5*time.Hour + 50*time.Minute))
	e.appendAudit("a2", e.clock.Now(), e.at(4*day))
	e.putKey(e.signingKey("k2", e.clock.Now(), e.at(6*day)))
	e.putPolicy(2, e.clock.Now(), e.at(9*day))
	e.ok("PutAttester", e.store.PutAttester(e.ctx, issuer.Attester{ID: "lab", Public: make(ed25519.PublicKey, ed25519.PublicKeySize), Added: e.clock.Now()}))
	e.ok("PutAdminToken", e.store.PutAdminToken(e.ctx, issuer.AdminToken{Name: "ops", Hash: sha256.Sum256([]byte("t")), Created: e.clock.Now()}))

	e.wantRow(issuer.CategoryAudit, 2, e.at(3*time.Hour), e.at(4*day))
	e.wantRow(issuer.CategorySigningKeys, 2, e.at(3*time.Hour), e.at(6*day))
	e.wantRow(issuer.CategoryPolicyHistory, 1, e.at(3*time.Hour), e.at(9*day))
	// Configuration: the current policy, an attester and a token at least
	// (an adapter may keep records of its own there).
	cfg = e.row(issuer.CategoryConfiguration)
	if cfg.Count < 3 || cfg.NextDeadline != nil {
		e.t.Fatalf("configuration row: count %d (want at least 3), next deadline %v (want none)", cfg.Count, cfg.NextDeadline)
	}

	// After a sweep at day 6: a2 and k2 gone; the oldest and next
	// deadlines move to what is left.
	e.clock.Set(e.at(6 * day))
	st, err := e.store.Sweep(e.ctx, e.at(6*day))
	e.ok("Sweep", err)
	e.wantSwept(st, map[string]int{issuer.CategoryAudit: 1, issuer.CategorySigningKeys: 1})
	e.wantRow(issuer.CategoryAudit, 1, e.at(3*time.Hour), e.at(8*day))
	e.wantRow(issuer.CategorySigningKeys, 1, e.at(3*time.Hour), e.at(12*day))
	e.wantRow(issuer.CategoryPolicyHistory, 1, e.at(3*time.Hour), e.at(9*day))
	// Withdrawn keys count in their category until Until.
	e.clock.Set(e.at(6*day + 2*time.Hour))
	e.ok("WithdrawSigningKey", e.store.WithdrawSigningKey(e.ctx, issuer.WithdrawnKey{ID: "k1", At: e.clock.Now(), Until: e.at(11 * day)}))
	e.wantRow(issuer.CategorySigningKeys, 1, e.at(6*day+2*time.Hour), e.at(11*day))
}

func testSweepDeletesWhatIsDue(e *stateEnv) {
	due := e.at(7 * day)
	// Signing keys: two due at DestroyAt, one later; a withdrawal due
	// (Until), one later.
	kDue1 := e.signingKey("k-due-1", e.at(0), due)
	kDue2 := e.signingKey("k-due-2", e.at(0), due.Add(-time.Hour))
	kLater := e.signingKey("k-later", e.at(0), due.Add(day))
	kW1 := e.signingKey("k-w1", e.at(0), e.at(30*day))
	kW2 := e.signingKey("k-w2", e.at(0), e.at(30*day))
	for _, k := range []issuer.SigningKey{kDue1, kDue2, kLater, kW1, kW2} {
		e.putKey(k)
	}
	wDue := issuer.WithdrawnKey{ID: "k-w1", At: e.at(time.Hour), Until: due}
	wLater := issuer.WithdrawnKey{ID: "k-w2", At: e.at(time.Hour), Until: due.Add(time.Second)}
	e.ok("WithdrawSigningKey", e.store.WithdrawSigningKey(e.ctx, wDue))
	e.ok("WithdrawSigningKey", e.store.WithdrawSigningKey(e.ctx, wLater))
	// Audit: two due, one a second after.
	aDue := e.appendAudit("due", e.at(time.Minute), due)
	e.appendAudit("earlier", e.at(2*time.Minute), due.Add(-day))
	aLater := e.appendAudit("later", e.at(3*time.Minute), due.Add(time.Second))
	// Policy history (a deadline given with a policy is the one it
	// replaces'): v1 and v2 due, v3 later, v4 current (no deadline).
	e.putPolicy(1, e.at(time.Minute), e.at(90*day))
	e.putPolicy(2, e.at(2*time.Minute), due)
	e.putPolicy(3, e.at(3*time.Minute), due)
	v4 := e.putPolicy(4, e.at(4*time.Minute), due.Add(day))
	// Configuration has no deadline: a sweep never touches it.
	_, bundleKey, err := ed25519.GenerateKey(rand.Reader)
	e.ok("GenerateKey", err)
	e.ok("PutBundleKey", e.store.PutBundleKey(e.ctx, bundleKey))
	att := issuer.Attester{ID: "lab", Public: make(ed25519.PublicKey, ed25519.PublicKeySize), Added: e.at(0)}
	e.ok("PutAttester", e.store.PutAttester(e.ctx, att))
	tok := issuer.AdminToken{Name: "ops", Hash: sha256.Sum256([]byte("t")), Created: e.at(0)}
	e.ok("PutAdminToken", e.store.PutAdminToken(e.ctx, tok))

	// A second before the deadline only what was due before goes
	// (aEarlier, k-due-2); a second sweep then finds nothing.
	e.clock.Set(due.Add(-time.Second))
	st, err := e.store.Sweep(e.ctx, due.Add(-time.Second))
	e.ok("Sweep a second early", err)
	e.wantSwept(st, map[string]int{issuer.CategoryAudit: 1, issuer.CategorySigningKeys: 1})
	e.wantAudit(aDue, aLater)
	e.wantKeys(kDue1, kLater)
	before := e.snapshot()
	st, err = e.store.Sweep(e.ctx, due.Add(-time.Second))
	e.ok("Sweep again", err)
	e.wantSwept(st, nil)
	e.wantUnchanged("a sweep with nothing due", before)

	// At the deadline exactly, everything due goes and nothing else.
	e.clock.Set(due)
	st, err = e.store.Sweep(e.ctx, due)
	e.ok("Sweep at the deadline", err)
	e.wantSwept(st, map[string]int{
		issuer.CategoryAudit:         1,
		issuer.CategorySigningKeys:   2, // k-due-1 and the withdrawal of k-w1
		issuer.CategoryPolicyHistory: 2,
	})
	e.wantAudit(aLater)
	e.wantKeys(kLater)
	e.wantWithdrawn(wLater)
	e.wantRow(issuer.CategoryPolicyHistory, 1, e.t0, due.Add(day))
	e.wantPolicy(v4)
	got, err := e.store.BundleKey(e.ctx)
	e.ok("BundleKey", err)
	if !got.Equal(bundleKey) {
		e.t.Fatal("the sweep changed the bundle key")
	}
	e.wantAttesters(att)
	e.wantAdminTokens(tok)
	// A sweep with nothing due deletes nothing.
	st, err = e.store.Sweep(e.ctx, due)
	e.ok("Sweep again", err)
	e.wantSwept(st, nil)
}

func testSweepCatchesUp(e *stateEnv) {
	// Records due every day for 30 days; the sweeper was down until day
	// 20: one sweep deletes the 20 days' worth, and leaves the rest.
	var audit []issuer.AuditEntry
	var keys []issuer.SigningKey
	for d := 1; d <= 30; d++ {
		audit = append(audit, e.appendAudit(fmt.Sprintf("a%02d", d), e.at(time.Duration(d)*time.Minute), e.at(time.Duration(d)*day)))
		k := e.signingKey(fmt.Sprintf("k%02d", d), e.at(0), e.at(time.Duration(d)*day))
		e.putKey(k)
		keys = append(keys, k)
		e.putPolicy(d, e.at(time.Duration(d)*time.Minute), e.at(time.Duration(d)*day))
	}
	// v30 is current: 29 in history, v1..v29 held until the deadline given
	// with v2..v30.
	e.wantRow(issuer.CategoryPolicyHistory, 29, e.t0, e.at(2*day))
	gap := e.at(20 * day)
	e.clock.Set(gap)
	st, err := e.store.Sweep(e.ctx, gap)
	e.ok("Sweep after the gap", err)
	e.wantSwept(st, map[string]int{
		issuer.CategoryAudit:         20,
		issuer.CategorySigningKeys:   20,
		issuer.CategoryPolicyHistory: 19, // v1..v19, due on days 2..20
	})
	e.wantAudit(audit[20:]...)
	e.wantKeys(keys[20:]...)
	e.wantRow(issuer.CategoryAudit, 10, e.t0, e.at(21*day))
	e.wantRow(issuer.CategorySigningKeys, 10, e.t0, e.at(21*day))
	e.wantRow(issuer.CategoryPolicyHistory, 10, e.t0, e.at(21*day))
}

func testStateInvalidInput(e *stateEnv) {
	// Some of everything, so that a write refused half-way would show.
	k := e.signingKey("k1", e.at(0), e.at(10*day))
	e.putKey(k)
	e.appendAudit("kept", e.at(0), e.at(10*day))
	e.putPolicy(1, e.at(0), e.at(10*day))
	_, bundleKey, err := ed25519.GenerateKey(rand.Reader)
	e.ok("GenerateKey", err)
	e.ok("PutBundleKey", e.store.PutBundleKey(e.ctx, bundleKey))
	pub := bundleKey.Public().(ed25519.PublicKey)
	e.ok("PutAttester", e.store.PutAttester(e.ctx, issuer.Attester{ID: "lab", Public: pub, Added: e.at(0)}))
	e.ok("PutAdminToken", e.store.PutAdminToken(e.ctx, issuer.AdminToken{Name: "ops", Hash: sha256.Sum256([]byte("t")), Created: e.at(0)}))

	replacing := func(mod func(*issuer.SigningKey)) issuer.SigningKey {
		k2 := e.signingKey("k1", e.at(time.Hour), e.at(20*day))
		mod(&k2)
		return k2
	}
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"signing key without id", func() error { return e.store.PutSigningKey(e.ctx, replacing(func(k *issuer.SigningKey) { k.ID = "" })) }},
		{"signing key with a short private key", func() error {
			return e.store.PutSigningKey(e.ctx, replacing(func(k *issuer.SigningKey) { k.Private = k.Private[:10] }))
		}},
		{"signing key without DestroyAt", func() error {
			return e.store.PutSigningKey(e.ctx, replacing(func(k *issuer.SigningKey) { k.DestroyAt = time.Time{} }))
		}},
		{"withdrawal without id", func() error {
			return e.store.WithdrawSigningKey(e.ctx, issuer.WithdrawnKey{At: e.at(0), Until: e.at(day)})
		}},
		{"withdrawal without Until", func() error {
			return e.store.WithdrawSigningKey(e.ctx, issuer.WithdrawnKey{ID: "k1", At: e.at(0)})
		}},
		{"short bundle key", func() error { return e.store.PutBundleKey(e.ctx, bundleKey[:5]) }},
		{"attester without id", func() error {
			return e.store.PutAttester(e.ctx, issuer.Attester{Public: pub, Added: e.at(0)})
		}},
		{"attester with a short public key", func() error {
			return e.store.PutAttester(e.ctx, issuer.Attester{ID: "lab", Public: pub[:3], Added: e.at(0)})
		}},
		{"admin token without name", func() error {
			return e.store.PutAdminToken(e.ctx, issuer.AdminToken{Hash: sha256.Sum256([]byte("u")), Created: e.at(0)})
		}},
		{"admin token with a zero hash", func() error {
			return e.store.PutAdminToken(e.ctx, issuer.AdminToken{Name: "ops", Created: e.at(0)})
		}},
		{"policy version 0", func() error {
			return e.store.PutPolicy(e.ctx, issuer.PolicyRecord{Version: 0, Raw: []byte("{}"), Set: e.at(0)}, e.at(day))
		}},
		{"empty policy", func() error {
			return e.store.PutPolicy(e.ctx, issuer.PolicyRecord{Version: 2, Set: e.at(0)}, e.at(day))
		}},
		{"policy without a history deadline", func() error {
			return e.store.PutPolicy(e.ctx, issuer.PolicyRecord{Version: 2, Raw: []byte("{}"), Set: e.at(0)}, time.Time{})
		}},
		{"audit entry without time", func() error {
			return e.store.AppendAudit(e.ctx, issuer.AuditEntry{Admin: "ops", Action: "x"}, e.at(day))
		}},
		{"audit entry without action", func() error {
			return e.store.AppendAudit(e.ctx, issuer.AuditEntry{Time: e.at(0), Admin: "ops", Action: " "}, e.at(day))
		}},
		{"audit entry without deadline", func() error {
			return e.store.AppendAudit(e.ctx, issuer.AuditEntry{Time: e.at(0), Admin: "ops", Action: "x"}, time.Time{})
		}},
		{"sweep without now", func() error { _, err := e.store.Sweep(e.ctx, time.Time{}); return err }},
	} {
		before := e.snapshot()
		err := c.call()
		if err == nil || errors.Is(err, issuer.ErrNotFound) {
			e.t.Fatalf("%s: got %v, want an input error", c.name, err)
		}
		e.wantUnchanged(c.name, before)
	}
}

func testStateCancelledContext(e *stateEnv) {
	e.putKey(e.signingKey("k1", e.at(0), e.at(day)))
	e.appendAudit("kept", e.at(0), e.at(day))
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	k := e.signingKey("k2", e.at(0), e.at(day))
	pub := k.Public()
	before := e.snapshot()
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"PutSigningKey", func() error { return e.store.PutSigningKey(ctx, k) }},
		{"WithdrawSigningKey", func() error {
			return e.store.WithdrawSigningKey(ctx, issuer.WithdrawnKey{ID: "k1", At: e.at(0), Until: e.at(day)})
		}},
		{"PutBundleKey", func() error { return e.store.PutBundleKey(ctx, k.Private) }},
		{"NextBundleSequence", func() error { _, err := e.store.NextBundleSequence(ctx); return err }},
		{"PutAttester", func() error {
			return e.store.PutAttester(ctx, issuer.Attester{ID: "lab", Public: pub, Added: e.at(0)})
		}},
		{"PutAdminToken", func() error {
			return e.store.PutAdminToken(ctx, issuer.AdminToken{Name: "ops", Hash: sha256.Sum256([]byte("t")), Created: e.at(0)})
		}},
		{"PutPolicy", func() error {
			return e.store.PutPolicy(ctx, issuer.PolicyRecord{Version: 1, Raw: []byte("{}"), Set: e.at(0)}, e.at(day))
		}},
		{"AppendAudit", func() error {
			return e.store.AppendAudit(ctx, issuer.AuditEntry{Time: e.at(0), Admin: "ops", Action: "x"}, e.at(day))
		}},
		{"Sweep", func() error { _, err := e.store.Sweep(ctx, e.at(2*day)); return err }},
		{"SigningKeys", func() error { _, err := e.store.SigningKeys(ctx); return err }},
		{"Audit", func() error { _, err := e.store.Audit(ctx); return err }},
		{"Inventory", func() error { _, err := e.store.Inventory(ctx); return err }},
	} {
		if err := c.call(); !errors.Is(err, context.Canceled) {
			e.t.Fatalf("%s with a cancelled context: got %v, want context.Canceled", c.name, err)
		}
	}
	e.wantUnchanged("calls with a cancelled context", before)
}
