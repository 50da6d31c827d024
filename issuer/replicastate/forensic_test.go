package replicastate_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/forensic"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/issuer/redisstore"
	"github.com/healthcode/healthcode/issuer/replicastate"
)

// purgeWait bounds the wait, after the sweep, for every etcd member's purge
// loop (every 30 s) to remove the WAL segments the scrub released, with
// room for a loaded machine.
const purgeWait = 90 * time.Second

const prefix = "/forensic/"

// cluster is one replica's issuer on a real 3-member etcd and 3+3 Redis
// Cluster, served by the HTTP API on 127.0.0.1.
type cluster struct {
	etcd  *testcluster.EtcdCluster
	redis *testcluster.RedisCluster
	ec    *clientv3.Client
	rc    *redis.ClusterClient
	state *etcdstore.Store
	iss   *issuer.Issuer
	clock *issuertest.Clock
	url   string
}

// nodes are every server of the cluster, etcd members and Redis nodes.
func (c *cluster) nodes() []*testcluster.Node {
	return append(append([]*testcluster.Node{}, c.etcd.Members...), c.redis.Nodes...)
}

func startCluster(t *testing.T, t0 time.Time) *cluster {
	t.Helper()
	c := &cluster{etcd: testcluster.StartEtcd(t), redis: testcluster.StartRedis(t), clock: issuertest.NewClock(t0)}
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if c.ec, err = clientv3.New(clientv3.Config{Endpoints: c.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.ec.Close() })
	c.rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.redis.Addrs(), MaxRedirects: 8})
	t.Cleanup(func() { c.rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	state, err := etcdstore.New(ctx, c.ec, etcdstore.Options{Prefix: prefix, KEK: k, Clock: c.clock})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the store closes before its client.
	t.Cleanup(func() {
		if err := state.Close(); err != nil {
			t.Error(err)
		}
	})
	replay, err := redisstore.New(c.rc, redisstore.Options{EpochKeys: state, Prefix: prefix, Clock: c.clock, WaitReplicas: 1, WaitTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.state = state
	// Exact inventory figures, so that five records show.
	if c.iss, err = issuer.New(ctx, issuer.Config{Store: replay, State: replicastate.State{Store: state, Replay: replay}, Clock: c.clock,
		InventoryRounding: 1}); err != nil {
		t.Fatal(err)
	}
	opts := httpapi.DefaultOptions()
	opts.RedeemPerMinute, opts.AdminPerMinute = 0, 0
	srv := httpapi.New(c.iss, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.App().Listener(ln)
	}()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	})
	c.url = "http://" + ln.Addr().String()
	return c
}

// post sends a redemption to /v1/tokens; it returns the status and the
// error code, if any.
func (c *cluster) post(t *testing.T, req httpapi.TokensRequest) (int, string) {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(c.url+"/v1/tokens", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%d %s: %v", resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, e.Error.Code
}

// hits is every pattern found in any server's directory, "node: what in
// file".
func (c *cluster) hits(t *testing.T, ps []forensic.Pattern) []string {
	t.Helper()
	var found []string
	for _, n := range c.nodes() {
		for _, h := range forensic.Hits(t, n.Dir, ps) {
			found = append(found, n.Name+": "+h)
		}
	}
	sort.Strings(found)
	return found
}

// redisHeld is every key the store holds under prefix on the Redis masters,
// as patterns, with its hash values of 16 bytes or more (secret hashes,
// markers): what the sweep must leave on no node.
func (c *cluster) redisHeld(t *testing.T, ctx context.Context) (keys []forensic.Pattern, values []forensic.Pattern) {
	t.Helper()
	var (
		mu  sync.Mutex // ForEachMaster calls on every master at once
		all []string
	)
	err := c.rc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		found, err := m.Keys(ctx, prefix+"*").Result() // a test's few keys
		mu.Lock()
		all = append(all, found...)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		keys = append(keys, forensic.Pattern{What: "redis key " + k, Bytes: []byte(k)})
		if typ, err := c.rc.Type(ctx, k).Result(); err != nil || typ != "hash" {
			continue
		}
		h, err := c.rc.HGetAll(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for f, v := range h {
			if len(v) >= 16 {
				values = append(values, forensic.Pattern{What: "redis value " + k + " " + f, Bytes: []byte(v)})
			}
		}
	}
	return keys, values
}

// etcdHeld is, for every key under prefix+sub in etcd, its value and the
// sealed blob it holds (base64 in the JSON), as patterns; and the blobs'
// raw bytes, which etcd never holds as such but a decoder could leave.
func (c *cluster) etcdHeld(t *testing.T, ctx context.Context, sub string) (held, raw []forensic.Pattern) {
	t.Helper()
	resp, err := c.ec.Get(ctx, prefix+sub, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		held = append(held, forensic.Pattern{What: "etcd value of " + string(kv.Key), Bytes: kv.Value})
		var v struct{ Sealed []byte }
		if err := json.Unmarshal(kv.Value, &v); err != nil || len(v.Sealed) == 0 {
			t.Fatalf("%s holds no sealed blob (%v)", kv.Key, err)
		}
		held = append(held, forensic.Pattern{What: "sealed blob of " + string(kv.Key), Bytes: []byte(base64.StdEncoding.EncodeToString(v.Sealed))})
		raw = append(raw, forensic.Pattern{What: "raw sealed blob of " + string(kv.Key), Bytes: v.Sealed},
			forensic.Pattern{What: "raw sealed blob's last 24 bytes of " + string(kv.Key), Bytes: v.Sealed[len(v.Sealed)-24:]})
	}
	return held, raw
}

// Invariant 5 on a replica's whole state, as TestForensicDataDirectoryAfterDeadlines
// (issuer/httpapi) is on bbolt: through the real issuer and its HTTP API
// on etcd + Redis Cluster, redeem attestations with marker ids, hints and
// wallet secrets, make audit entries, and let the signing keys rotate;
// then move the clock past every deadline, run the leader's sweep, and
// search every byte of every etcd member's and Redis node's directory:
// nothing of the attestations, the replay records, the audit entries, the
// retired keys or the epoch keys is left. Control searches before the
// sweep find the replay record keys, the audit text and the sealed keys,
// so the search would see them.
func TestForensicClusterAfterDeadlines(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Hour) // Redis's expiry goes by its wall clock
	c := startCluster(t, t0)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	pub, attesterKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const attester = "forensic-lab"
	if err := c.iss.AddAttester(ctx, "test", attester, pub); err != nil {
		t.Fatal(err)
	}
	var needles []forensic.Pattern
	var atts []string
	for n := range 5 {
		id := fmt.Sprintf("FORENSIC-MARKER-%04d", n)
		att, err := attestation.Sign(attesterKey, attestation.Claims{
			Attester: attester, Kind: attestation.TestNegative, At: t0.Unix(),
			Expires: t0.Add(48 * time.Hour).Unix(), ID: id, Hint: "ZZ1970",
		})
		if err != nil {
			t.Fatal(err)
		}
		// Each with a wallet secret: only a keyed hash of it may be stored.
		secret := bytes.Repeat([]byte{byte(0xA0 + n)}, 32)
		if status, code := c.post(t, httpapi.TokensRequest{Attestations: []string{att},
			Secret: base64.RawURLEncoding.EncodeToString(secret)}); status != http.StatusOK {
			t.Fatalf("redeem with a secret: %d %s", status, code)
		}
		atts = append(atts, att)
		needles = append(needles, forensic.Redemption(id, att, secret)...)
	}
	needles = append(needles, forensic.Pattern{What: "hint", Bytes: []byte("ZZ1970")})
	// Control: the API knows the records (a second redemption without the
	// secret is refused as already redeemed) and counts them.
	if status, code := c.post(t, httpapi.TokensRequest{Attestations: atts[:1]}); status != http.StatusConflict || code != issuer.CodeAlreadyRedeemed {
		t.Fatalf("control: a second redemption: %d %s, want 409 %s", status, code, issuer.CodeAlreadyRedeemed)
	}
	if n := inventoryCount(t, ctx, c.iss, issuer.CategoryReplay); n == 0 {
		t.Fatal("control: the inventory counts no replay records")
	}

	// An admin action whose audit entry carries a marker.
	labPub, _, _ := ed25519.GenerateKey(rand.Reader)
	const labMarker = "AUDIT-MARKER-LAB"
	if err := c.iss.AddAttester(ctx, "forensic-admin", labMarker, labPub); err != nil {
		t.Fatal(err)
	}
	if err := c.iss.RemoveAttester(ctx, "forensic-admin", labMarker); err != nil {
		t.Fatal(err)
	}
	// A rotation at once (as for a compromised key): the first key is
	// retired, and must be destroyed at its deadline like the second.
	if _, _, err := c.iss.RotateKeys(ctx, "forensic-admin", true); err != nil {
		t.Fatal(err)
	}
	keys, err := c.state.SigningKeys(ctx)
	if err != nil || len(keys) < 2 {
		t.Fatalf("signing keys: %d %v, want 2 after a rotation", len(keys), err)
	}
	for _, k := range keys {
		needles = append(needles,
			forensic.Pattern{What: "signing key seed " + k.ID, Bytes: k.Private.Seed()},
			forensic.Pattern{What: "signing key seed b64 " + k.ID, Bytes: []byte(base64.StdEncoding.EncodeToString(k.Private.Seed())[:40])})
	}

	// What the stores hold, as they hold it: the replay record and count
	// keys with their secret hashes and markers in Redis; the sealed
	// signing keys, the sealed epoch keys and the audit entries in etcd.
	recordKeys, recordValues := c.redisHeld(t, ctx)
	sealed, sealedRaw := c.etcdHeld(t, ctx, "keys/")
	epochs, epochsRaw := c.etcdHeld(t, ctx, "epoch/")
	sealed = append(sealed, epochs...)
	needles = append(append(needles, sealedRaw...), epochsRaw...)
	audit := []forensic.Pattern{{What: "audit marker", Bytes: []byte(labMarker)}}
	if len(recordKeys) < 5 || len(sealed) < 2*(len(keys)+1) {
		t.Fatalf("control: Redis holds %d keys, etcd %d sealed keys (%d signing keys)", len(recordKeys), len(sealed), len(keys))
	}

	// Control: the record keys, the sealed keys and the audit text are on
	// disk before their deadlines, each on some node.
	for _, group := range [][]forensic.Pattern{recordKeys, recordValues, sealed, audit} {
		for _, p := range group {
			if len(c.hits(t, []forensic.Pattern{p})) == 0 {
				t.Errorf("control: %s is on no node's disk before its deadline", p.What)
			}
		}
	}
	// Nothing of the attestations or the secrets is ever written, even
	// before the sweep, and the keys are sealed: no private key byte either.
	if hits := c.hits(t, needles); len(hits) > 0 {
		t.Errorf("before any deadline, the servers' directories hold:\n%s", strings.Join(hits, "\n"))
	}
	if t.Failed() {
		t.FailNow()
	}
	needles = append(needles, recordKeys...)
	needles = append(needles, recordValues...)
	needles = append(needles, sealed...)
	needles = append(needles, audit...)

	// Past every deadline: audit (365d) and the keys (30d + 30d) included.
	c.clock.Advance(400 * 24 * time.Hour)
	if err := c.iss.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	st, err := c.iss.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Compacted || st.Deleted[issuer.CategoryReplay] == 0 || st.Deleted[issuer.CategoryAudit] == 0 {
		t.Fatalf("sweep: deleted %v, compacted %v", st.Deleted, st.Compacted)
	}
	t.Logf("sweep: deleted %v in %s", st.Deleted, time.Since(started).Round(time.Millisecond))

	// The etcd members purge the WAL segments the scrub released on their
	// own schedule: poll until no node holds anything.
	for first := true; ; first = false {
		hits := c.hits(t, needles)
		if len(hits) == 0 {
			break
		}
		if first {
			t.Logf("right after the sweep, %d patterns found, e.g. %s", len(hits), hits[0])
		}
		if time.Since(started) > purgeWait {
			t.Fatalf("%s after the sweep, the servers' directories still hold:\n%s", purgeWait, strings.Join(hits, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("no node holds anything %s after the sweep began", time.Since(started).Round(time.Second))

	// No API returns what was swept: the audit log no longer lists the
	// entries, the inventory counts no replay records or counts, and the
	// same attestation is refused as expired, not as redeemed.
	entries, err := c.iss.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Detail, labMarker) {
			t.Fatalf("audit entry past its deadline still listed: %+v", e)
		}
	}
	for _, cat := range []string{issuer.CategoryReplay, issuer.CategoryCounts} {
		if n := inventoryCount(t, ctx, c.iss, cat); n != 0 {
			t.Fatalf("inventory after the sweep: %s has %d", cat, n)
		}
	}
	if status, code := c.post(t, httpapi.TokensRequest{Attestations: atts[:1]}); code != attestation.CodeExpired {
		t.Fatalf("the same attestation after the sweep: %d %s, want %s", status, code, attestation.CodeExpired)
	}
}

// inventoryCount is the issuer's exact count of the category name.
func inventoryCount(t *testing.T, ctx context.Context, iss *issuer.Issuer, name string) int64 {
	t.Helper()
	cats, _, err := iss.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cats {
		if c.Name == name {
			return int64(c.Count)
		}
	}
	t.Fatalf("inventory has no %s: %+v", name, cats)
	return 0
}
