package migrate_test

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/migrate"
)

// A bbolt issuer's configuration moved to etcd: an issuer started on the
// migrated state signs its bundle with the same bundle key (a verifier
// pinned to the old fingerprint, holding the old bundle, accepts it: same
// pin, higher sequence), keeps the withdrawal, the attesters and the admin
// token and the audit log; migrating again into the same prefix is refused
// and writes nothing.
func TestMigrateBoltToEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	kekFile := filepath.Join(t.TempDir(), "kek")
	k, _, err := kek.LoadOrCreate(kekFile)
	if err != nil {
		t.Fatal(err)
	}

	// The bbolt issuer: an attester, an admin token, a revoked key (so a
	// withdrawal), and a few bundles signed.
	db, err := boltstore.Open(dir, boltstore.Options{KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	old, err := issuer.New(ctx, issuer.Config{Store: db, State: db, Clock: issuer.SystemClock{}})
	if err != nil {
		t.Fatal(err)
	}
	labPub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.AddAttester(ctx, "test", "lab-1", labPub); err != nil {
		t.Fatal(err)
	}
	adminTok, err := old.CreateAdminToken(ctx, "test", "ops")
	if err != nil {
		t.Fatal(err)
	}
	var revoked string
	for _, ki := range old.Keys() {
		if ki.Status == "current" {
			revoked = ki.ID
		}
	}
	if revoked == "" {
		t.Fatalf("no current key among %+v", old.Keys())
	}
	if _, err := old.RevokeKey(ctx, "test", revoked); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.RotateKeys(ctx, "test", true); err != nil {
		t.Fatal(err)
	}
	pin := old.Fingerprint()
	oldRaw, _ := old.Bundle()
	held, err := bundle.Accept(oldRaw, pin, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if held.Sequence < 2 {
		t.Fatalf("old bundle sequence %d: the test wants several", held.Sequence)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Migrate it (the bbolt store reopened, as 'issuer migrate' does).
	src, err := boltstore.Open(dir, boltstore.Options{KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ec := testcluster.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	state, err := etcdstore.New(ctx, cli, etcdstore.Options{KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	rep, err := migrate.FromBolt(ctx, src, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Fingerprint != pin || rep.Sequence != held.Sequence || rep.Attesters != 1 || rep.Withdrawals != 1 || rep.AdminTokens != 1 || rep.Keys < 2 {
		t.Errorf("report %+v: want fingerprint %s, sequence %d, 1 attester, 1 withdrawal, 1 admin token, 2 or more keys", rep, pin, held.Sequence)
	}
	again, err := migrate.FromBolt(ctx, src, state, time.Now())
	if err == nil || !strings.Contains(err.Error(), "already holds an issuer's state") || again.Written {
		t.Fatalf("second migration into the same prefix: %+v, %v; want a refusal that wrote nothing", again, err)
	}

	// Migrated years later, every signing key, withdrawal and audit entry
	// is past its deadline: none is copied (no migration brings back what
	// a sweep would have deleted).
	late, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: "/late/", KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	lateRep, err := migrate.FromBolt(ctx, src, late, time.Now().AddDate(5, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if lateRep.Keys != 0 || lateRep.Withdrawals != 0 || lateRep.Audit != 0 || lateRep.Expired != rep.Keys+rep.Withdrawals+rep.Audit {
		t.Errorf("five years late: %+v; want nothing with a deadline copied, %d left out", lateRep, rep.Keys+rep.Withdrawals+rep.Audit)
	}
	if keys, err := late.SigningKeys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("five years late, the prefix holds %d signing keys (%v)", len(keys), err)
	}

	// An issuer on the migrated state (its replay records in a store of
	// its own: they are not migrated).
	replay, err := boltstore.Open(t.TempDir(), boltstore.Options{KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	replica, err := issuer.New(ctx, issuer.Config{Store: replay, State: state, Clock: issuer.SystemClock{}})
	if err != nil {
		t.Fatal(err)
	}
	if replica.Fingerprint() != pin {
		t.Fatalf("fingerprint %s after migration, want %s", replica.Fingerprint(), pin)
	}
	raw, _ := replica.Bundle()
	b, err := bundle.Accept(raw, pin, held, time.Now())
	if err != nil {
		t.Fatalf("a verifier pinned to %s holding sequence %d refuses the migrated issuer's bundle: %v", pin, held.Sequence, err)
	}
	if b.Sequence <= held.Sequence {
		t.Errorf("bundle sequence %d after migration, want above %d", b.Sequence, held.Sequence)
	}
	if !b.IsWithdrawn(revoked) {
		t.Errorf("the migrated bundle does not name %s as withdrawn", revoked)
	}
	if name, ok := replica.AuthenticateAdmin(adminTok); !ok || name != "ops" {
		t.Errorf("the old admin token: %q, %v", name, ok)
	}
	atts, err := replica.Attesters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 1 || atts[0].ID != "lab-1" || !atts[0].Public.Equal(labPub) {
		t.Errorf("attesters after migration: %+v", atts)
	}
	audit, err := replica.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) < 2 || audit[len(audit)-1].Action != "migrate" {
		t.Errorf("audit after migration ends with %+v, want the old entries and a migrate entry", audit[len(audit)-1:])
	}
}
