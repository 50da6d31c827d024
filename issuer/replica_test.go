package issuer_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

// sharedState is one shared state for several replicas in a test: a real
// etcd (testcluster) for the state, each replica with its own client and
// store as each replica process has (replicaState), and one real bbolt
// file for the replay records.
type sharedState struct {
	replicaState func() issuer.StateStore
	replay       issuer.Store
	etcd         []string // the members' client endpoints
}

func newSharedState(t *testing.T, clock issuer.Clock) sharedState {
	t.Helper()
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "data"), boltstore.Options{KEK: k, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ec := testcluster.StartEtcd(t)
	open := func() issuer.StateStore {
		t.Helper()
		cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: "/replicas/", KEK: k, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		// Cleanups run last first: the store closes before its client.
		t.Cleanup(func() { cli.Close() })
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		return s
	}
	return sharedState{replicaState: open, replay: db, etcd: ec.Endpoints()}
}

// replicas is n issuers on one shared state, started together.
type replicas struct {
	t     *testing.T
	clock *issuertest.Clock
	state sharedState
	view  issuer.StateStore // the test's own client of the shared state
	iss   []*issuer.Issuer
}

func startReplicas(t *testing.T, n int, p *policy.Policy, log *slog.Logger) *replicas {
	t.Helper()
	clock := issuertest.NewClock(t0)
	r := &replicas{t: t, clock: clock, state: newSharedState(t, clock), iss: make([]*issuer.Issuer, n)}
	r.view = r.state.replicaState()
	states := make([]issuer.StateStore, n)
	for m := range n {
		states[m] = r.state.replicaState()
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for m := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.iss[m], errs[m] = r.startOn(states[m], p, log)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return r
}

// start starts one more replica with a state client of its own.
func (r *replicas) start(p *policy.Policy, log *slog.Logger) (*issuer.Issuer, error) {
	return r.startOn(r.state.replicaState(), p, log)
}

func (r *replicas) startOn(state issuer.StateStore, p *policy.Policy, log *slog.Logger) (*issuer.Issuer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return issuer.New(context.Background(), issuer.Config{Store: r.state.replay, State: state, Clock: r.clock, Policy: p, Logger: log})
}

// refresh is what each replica's watch does on a change.
func (r *replicas) refresh() {
	r.t.Helper()
	for _, iss := range r.iss {
		if err := iss.Refresh(context.Background()); err != nil {
			r.t.Fatal(err)
		}
	}
}

// published is the bundle sequence the shared state holds.
func (r *replicas) published() uint64 {
	r.t.Helper()
	pb, err := r.view.(issuer.Sharing).PublishedBundle(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return pb.Sequence
}

func served(iss *issuer.Issuer) uint64 {
	_, b := iss.Bundle()
	return b.Sequence
}

func inputCode(err error) string {
	var ie *issuer.InputError
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}

// Replicas started together on an empty state make one bundle key, one
// policy, one signing key and one bundle; a replica that starts later
// adopts them and signs nothing.
func TestReplicasStartAsOne(t *testing.T) {
	ctx := context.Background()
	r := startReplicas(t, 3, nil, nil)
	keys, err := r.view.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("%d signing keys after three replicas started, want 1", len(keys))
	}
	seq := r.published()
	r.refresh()
	for n, iss := range r.iss {
		if iss.Fingerprint() != r.iss[0].Fingerprint() {
			t.Fatalf("replica %d pins %s, replica 0 %s", n, iss.Fingerprint(), r.iss[0].Fingerprint())
		}
		if got := served(iss); got != seq {
			t.Fatalf("replica %d serves bundle %d, published %d", n, got, seq)
		}
		if iss.Policy().Version != 1 {
			t.Fatalf("replica %d: policy version %d", n, iss.Policy().Version)
		}
	}
	audit, err := r.iss[0].Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) != 1 || audit[0].Action != "policy.set" {
		t.Fatalf("audit after the start: %+v, want one policy.set", audit)
	}

	late, err := r.start(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.published(); got != seq {
		t.Fatalf("a replica that started later published bundle %d over %d", got, seq)
	}
	if served(late) != seq || late.Keys()[0].ID != keys[0].ID {
		t.Fatalf("the late replica serves bundle %d with key %s; want %d with %s", served(late), late.Keys()[0].ID, seq, keys[0].ID)
	}
}

// A replica decides on what the shared state holds, not on what it last
// saw: it never installs a policy version at or below the stored one,
// and the bundle it signs comes after every one published.
func TestReplicaPolicyNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	r := startReplicas(t, 2, nil, nil)
	a, b := r.iss[0], r.iss[1]
	p2 := policy.Default()
	p2.Version = 2
	p2.Name = "two"
	if err := a.SetPolicy(ctx, "ops", p2); err != nil {
		t.Fatal(err)
	}
	// b has not refreshed: it still holds version 1 in memory.
	if b.Policy().Version != 1 {
		t.Fatalf("b holds version %d before any refresh", b.Policy().Version)
	}
	other := policy.Default()
	other.Version = 2
	other.Name = "another two"
	if err := b.SetPolicy(ctx, "ops", other); inputCode(err) != "invalid_policy" {
		t.Fatalf("b set a second version 2: %v", err)
	}
	seqA := r.published()
	p3 := policy.Default()
	p3.Version = 3
	if err := b.SetPolicy(ctx, "ops", p3); err != nil {
		t.Fatal(err)
	}
	if got := r.published(); got <= seqA || served(b) != got {
		t.Fatalf("after b's policy: published %d (a's was %d), b serves %d", got, seqA, served(b))
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	_, ab := a.Bundle()
	if a.Policy().Version != 3 || ab.Policy.Version != 3 || ab.Sequence != r.published() {
		t.Fatalf("a after refresh: policy %d, bundle %d of policy %d; want 3, %d, 3", a.Policy().Version, ab.Sequence, ab.Policy.Version, r.published())
	}
	rec, err := r.view.Policy(ctx)
	if err != nil || rec.Version != 3 {
		t.Fatalf("stored policy %d, %v", rec.Version, err)
	}
}

// Two replicas rotating at once publish one next key: the second sees the
// first's under the lock and is refused. The same for two admin tokens of
// one name.
func TestReplicasOneKeyPerSlotOneTokenPerName(t *testing.T) {
	ctx := context.Background()
	r := startReplicas(t, 2, nil, nil)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	toks := make([]string, 2)
	for n, iss := range r.iss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[n] = iss.RotateKeys(ctx, "ops", false)
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || inputCode(errors.Join(errs...)) != "conflict" {
		t.Fatalf("two scheduled rotations at once: %v and %v; want one conflict", errs[0], errs[1])
	}
	keys, err := r.view.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("%d keys held, want the first and one next", len(keys))
	}

	for n, iss := range r.iss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[n], errs[n] = iss.CreateAdminToken(ctx, "ops", "night-shift")
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || inputCode(errors.Join(errs...)) != "conflict" {
		t.Fatalf("two tokens named night-shift at once: %v and %v; want one conflict", errs[0], errs[1])
	}
	list, err := r.view.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d admin tokens stored, want 1", len(list))
	}
	// Either replica accepts the token once it has refreshed.
	r.refresh()
	tok := toks[0] + toks[1]
	for n, iss := range r.iss {
		if name, ok := iss.AuthenticateAdmin(tok); !ok || name != "night-shift" {
			t.Fatalf("replica %d: the token authenticates as %q, %v", n, name, ok)
		}
	}
}

// Bundles signed through different replicas (admin actions through any
// of them, the leader's schedule) go up in one sequence, and every replica
// serves the newest once it has refreshed. A revocation through one
// replica reaches the other's signing at its refresh.
func TestReplicaBundlesOneSequence(t *testing.T) {
	ctx := context.Background()
	r := startReplicas(t, 2, nil, nil)
	a, b := r.iss[0], r.iss[1]
	_, lab, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.AddAttester(ctx, "ops", "lab", lab.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	redeem := func(iss *issuer.Issuer) *issuer.Batch {
		t.Helper()
		now := r.clock.Now()
		att, err := attestation.Sign(lab, attestation.Claims{Attester: "lab", Kind: attestation.TestNegative, At: now.Add(-time.Hour).Unix(),
			Expires: now.Add(24 * time.Hour).Unix(), ID: randID(t)})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := iss.Redeem(ctx, issuer.Request{Attestations: []string{att}})
		if err != nil {
			t.Fatal(err)
		}
		return batch
	}
	// b learns the attester at its refresh (the watch's work).
	r.refresh()
	redeem(b)

	var seqs []uint64
	seqs = append(seqs, r.published())
	if _, _, err := a.RotateKeys(ctx, "ops", false); err != nil {
		t.Fatal(err)
	}
	seqs = append(seqs, r.published())
	// b revokes the key that signs now without having seen a's rotation.
	cur := b.Keys()[0].ID
	rev, err := b.RevokeKey(ctx, "ops", cur)
	if err != nil {
		t.Fatal(err)
	}
	seqs = append(seqs, r.published())
	r.clock.Advance(25 * time.Hour) // past half of the bundle's freshness
	if err := a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	seqs = append(seqs, r.published())
	for n := 1; n < len(seqs); n++ {
		if seqs[n] <= seqs[n-1] {
			t.Fatalf("published sequences %v do not strictly increase", seqs)
		}
	}
	if rev.Sequence != seqs[2] {
		t.Fatalf("the revocation names bundle %d, published %d", rev.Sequence, seqs[2])
	}
	r.refresh()
	for n, iss := range r.iss {
		_, bun := iss.Bundle()
		if bun.Sequence != seqs[3] || !bun.IsWithdrawn(cur) {
			t.Fatalf("replica %d serves bundle %d (withdraws %v), want %d withdrawing %s", n, bun.Sequence, bun.Withdrawn, seqs[3], cur)
		}
		// The key the revocation made signs on every replica, and the
		// scheduled next key is still the next one.
		if got := kidOf(t, redeem(iss).Tokens[0].Token); got != rev.Signing {
			t.Fatalf("replica %d signs with %s, want %s", n, got, rev.Signing)
		}
	}
}

// Refresh brings a policy set through another replica into force,
// including a new sweep interval for the Run of the replica that leads.
func TestReplicaRefreshWakesRun(t *testing.T) {
	ctx := context.Background()
	swept := sweepSignal{make(chan struct{}, 16)}
	p := policy.Default()
	p.Retention.SweepInterval = policy.Duration(6 * time.Hour)
	r := startReplicas(t, 2, p, nil)
	// A leader on a logger of its own that reports its sweeps.
	leader, err := r.start(nil, slog.New(swept))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- leader.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitSweep := func(what string) {
		t.Helper()
		select {
		case <-swept.ch:
		case <-time.After(20 * time.Second): // a failure bound, not a wait for time to pass
			t.Fatalf("no sweep %s", what)
		}
	}
	waitSweep("at start")
	r.clock.Advance(time.Hour)

	p2 := policy.Default()
	p2.Version = p.Version + 1
	p2.Retention.SweepInterval = policy.Duration(90 * time.Minute)
	if err := r.iss[1].SetPolicy(ctx, "ops", p2); err != nil {
		t.Fatal(err)
	}
	if err := leader.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if leader.Policy().Version != p2.Version {
		t.Fatalf("the leader holds policy %d after its refresh, want %d", leader.Policy().Version, p2.Version)
	}
	// Due 90 minutes after the last sweep: 30 minutes from now.
	r.clock.Advance(30 * time.Minute)
	waitSweep("when the interval set through another replica ended")
}

// A key revoked through a follower is swept by the leader at once (its
// sealed private part leaves the state's history), not at the next
// interval; the follower's admin call does not run the cluster-wide sweep
// itself.
func TestReplicaRevocationSweptByLeader(t *testing.T) {
	ctx := context.Background()
	swept := sweepSignal{make(chan struct{}, 16)}
	r := startReplicas(t, 1, nil, nil)
	leader, err := r.start(nil, slog.New(swept))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- leader.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-swept.ch:
	case <-time.After(20 * time.Second): // a failure bound
		t.Fatal("no sweep at start")
	}
	follower := r.iss[0]
	kid := follower.Keys()[0].ID
	if _, err := follower.RevokeKey(ctx, "ops", kid); err != nil {
		t.Fatal(err)
	}
	if err := leader.Refresh(ctx); err != nil { // the leader's watch
		t.Fatal(err)
	}
	select {
	case <-swept.ch:
	case <-time.After(20 * time.Second): // a failure bound, not a wait for time to pass
		t.Fatal("the leader did not sweep after a key was revoked through another replica")
	}
	for _, k := range leader.Keys() {
		if k.ID == kid {
			t.Fatalf("the leader still holds revoked key %s", kid)
		}
	}
}

// A replica waiting for the schedule lock another replica holds (one that
// died holding it keeps it until its session lapses) still brings other
// changes into force: its watch's Refresh does not wait behind the admin
// call that waits for the lock.
func TestReplicaRefreshNotHeldByAScheduleLockWait(t *testing.T) {
	ctx := context.Background()
	r := startReplicas(t, 1, nil, nil)
	iss := r.iss[0]
	held, err := r.view.(issuer.Sharing).LockSchedule(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(held)
	defer release()

	rotated := make(chan error, 1)
	go func() {
		_, _, err := iss.RotateKeys(ctx, "ops", false)
		rotated <- err
	}()
	// The rotation waits: its lock request stands in etcd behind the held one.
	cli, err := clientv3.New(clientv3.Config{Endpoints: r.state.etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second) // a failure bound
	for {
		resp, err := cli.Get(ctx, "/replicas/lock/schedule/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d schedule lock requests in etcd, want the held one and the rotation's", resp.Count)
		}
		time.Sleep(10 * time.Millisecond) // a poll interval: etcd decides
	}

	// An admin token made through another replica (no lock needed), and
	// this replica's watch.
	if err := r.view.PutAdminToken(ctx, issuer.AdminToken{Name: "made-elsewhere", Hash: [32]byte{7}, Created: r.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	refreshed := make(chan error, 1)
	go func() { refreshed <- iss.Refresh(ctx) }()
	select {
	case err := <-refreshed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // a failure bound
		t.Fatal("Refresh waited behind an admin call waiting for the schedule lock")
	}
	found := false
	for _, name := range iss.AdminTokens() {
		found = found || name == "made-elsewhere"
	}
	if !found {
		t.Fatalf("admin tokens after the refresh: %v, want made-elsewhere among them", iss.AdminTokens())
	}
	select {
	case err := <-rotated:
		t.Fatalf("the rotation ended while another replica held the lock: %v", err)
	default:
	}
	release()
	if err := <-rotated; err != nil {
		t.Fatalf("the rotation once the lock was released: %v", err)
	}
}
