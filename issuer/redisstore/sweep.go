package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/issuer"
)

// scanCount is SCAN's COUNT: keys looked at per call, and so at most the
// records one sweepRecords call reads (the master serves nothing else
// while it runs, so the batch stays small).
const scanCount = 1000

// pollEvery is how often Sweep asks a node whether its rewrite, snapshot
// or replication has caught up.
const pollEvery = 50 * time.Millisecond

// sweepRecords deletes, of the records named in ARGV[4..] (keys SCAN
// returned on this node), those of an epoch ended by now (ARGV[2], unix
// seconds: the end follows the prefix ARGV[3]) outright, and the others
// whose stored deadline is at or before now (ARGV[1], unix ms): Redis's
// own expiry goes by its wall clock, the store's by Clock. One call per
// SCAN batch: the keys sit on many slots of this node, hence
// allow-cross-slot-keys (Redis 7) and no declared keys. Returns how many
// it deleted.
var sweepRecords = redis.NewScript(`#!lua flags=allow-cross-slot-keys
local nowMs, nowS, plen = tonumber(ARGV[1]), tonumber(ARGV[2]), #ARGV[3]
local n = 0
for i = 4, #ARGV do
  local k = ARGV[i]
  local e = tonumber(string.match(k, '^(%d+):', plen + 1))
  if e and e <= nowS then
    n = n + redis.call('DEL', k)
  else
    local d = redis.call('HGET', k, 'd')
    if d and tonumber(d) <= nowMs then
      n = n + redis.call('DEL', k)
    end
  end
end
return n
`)

// sweepCounts deletes the days of the index (KEYS[1]) whose deadline is at
// or before now (ARGV[1], unix ms), the day's hash (ARGV[2] .. day, on the
// index's slot) with it. Returns how many days it deleted.
var sweepCounts = redis.NewScript(`
local days = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, d in ipairs(days) do
  redis.call('DEL', ARGV[2] .. d)
  redis.call('ZREM', KEYS[1], d)
end
return #days
`)

// Sweep deletes every record and aggregate count whose deadline is at or
// before now, then makes the deletion physical on every node: each master
// and replica rewrites its AOF and takes a fresh RDB snapshot, so that no
// file any node holds still has a deleted record (see the package
// comment). It forgets the keys of epochs that have ended.
//
// Deleted counts what the sweep deleted itself: records Redis had already
// expired by its own clock, or that SCAN expired as it met them, are gone
// too but not counted.
func (s *Store) Sweep(ctx context.Context, now time.Time) (issuer.SweepStats, error) {
	st := issuer.SweepStats{Deleted: map[string]int{issuer.CategoryReplay: 0, issuer.CategoryCounts: 0}}
	s.forget(now)
	var days int64
	err := s.retrying(ctx, func() error {
		var err error
		days, err = sweepCounts.Run(ctx, s.c, []string{s.countIndex()}, now.UnixMilli(), s.opts.Prefix+"{c}:").Int64()
		return err
	})
	if err != nil {
		return st, fmt.Errorf("redisstore: sweep: aggregate counts: %w", err)
	}
	st.Deleted[issuer.CategoryCounts] = int(days)

	// Masters as the cluster has them now (a failover since the last
	// call must not leave a shard unswept).
	s.c.ReloadState(ctx)
	var mu sync.Mutex
	err = s.c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := s.sweepMaster(ctx, m, now)
		mu.Lock()
		st.Deleted[issuer.CategoryReplay] += n
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("master %s: %w", m.Options().Addr, err)
		}
		// The replicas' rewrites must not start before they have the
		// deletions.
		ctx, cancel := context.WithTimeout(ctx, s.opts.PersistTimeout)
		defer cancel()
		if err := replicasCaughtUp(ctx, m); err != nil {
			return fmt.Errorf("master %s: %w", m.Options().Addr, err)
		}
		return nil
	})
	// What was deleted is made physical even if a master failed.
	perr := s.persist(ctx)
	if perr == nil {
		// Nodes the cluster deems failing were not rewritten: they keep
		// their stale files until they rejoin and a sweep runs. Say so.
		perr = failingNodes(ctx, s.c)
	}
	st.Compacted = perr == nil
	if err := errors.Join(err, perr); err != nil {
		return st, fmt.Errorf("redisstore: sweep: %w", err)
	}
	return st, nil
}

// sweepMaster scans one master's keys of this store. SCAN deletes the
// expired keys it meets (only those matching its pattern); the records
// it returns go to sweepRecords, one call per batch.
func (s *Store) sweepMaster(ctx context.Context, m *redis.Client, now time.Time) (int, error) {
	records := s.opts.Prefix + "r:"
	deleted := 0
	var cursor uint64
	for {
		keys, next, err := m.Scan(ctx, cursor, s.opts.Prefix+"*", scanCount).Result()
		if err != nil {
			return deleted, err
		}
		args := []any{now.UnixMilli(), now.Unix(), records}
		for _, k := range keys {
			if strings.HasPrefix(k, records) {
				args = append(args, k)
			}
		}
		if len(args) > 3 {
			n, err := sweepRecords.Run(ctx, m, nil, args...).Int()
			if err != nil {
				return deleted, err
			}
			deleted += n
		}
		if next == 0 {
			return deleted, nil
		}
		cursor = next
	}
}

// replicasCaughtUp waits until every online replica of master m has
// applied its replication stream up to now. One that is not online (its
// link down, or resynchronising) is not waited for: it gets the deletions
// when it resynchronises, and its files are rewritten by the next sweep.
func replicasCaughtUp(ctx context.Context, m *redis.Client) error {
	text, err := m.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	want, err := strconv.ParseInt(field(text, "master_repl_offset"), 10, 64)
	if err != nil {
		return fmt.Errorf("INFO replication: master_repl_offset: %w", err)
	}
	return poll(ctx, "its replicas to apply the deletions", func() (bool, error) {
		text, err := m.Info(ctx, "replication").Result()
		if err != nil {
			return false, err
		}
		for _, line := range strings.Split(text, "\n") {
			name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || !strings.HasPrefix(name, "slave") || name == "slave_read_repl_offset" || name == "slave_repl_offset" {
				continue
			}
			// slaveN:ip=…,port=…,state=online,offset=N,lag=0
			kvs := strings.Split(v, ",")
			if !slices.Contains(kvs, "state=online") {
				continue
			}
			for _, kv := range kvs {
				if o, ok := strings.CutPrefix(kv, "offset="); ok {
					n, err := strconv.ParseInt(o, 10, 64)
					if err != nil || n < want {
						return false, nil
					}
				}
			}
		}
		return true, nil
	})
}

// persist rewrites the AOF of every node, masters and replicas, and then
// takes a fresh RDB snapshot on each, waiting (at most PersistTimeout)
// until each is done.
func (s *Store) persist(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.PersistTimeout)
	defer cancel()
	return s.c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
		if err := rewriteAOF(ctx, n); err != nil {
			return fmt.Errorf("node %s: AOF rewrite: %w", n.Options().Addr, err)
		}
		if err := snapshot(ctx, n); err != nil {
			return fmt.Errorf("node %s: snapshot: %w", n.Options().Addr, err)
		}
		return nil
	})
}

// failingNodes returns an error naming the nodes the cluster deems
// failing (CLUSTER NODES flags fail or fail?), if any.
func failingNodes(ctx context.Context, c *redis.ClusterClient) error {
	text, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER NODES: %w", err)
	}
	var down []string
	for _, line := range strings.Split(text, "\n") {
		// <id> <ip:port@cport> <flags> …
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		for _, flag := range strings.Split(f[2], ",") {
			if flag == "fail" || flag == "fail?" {
				addr, _, _ := strings.Cut(f[1], "@")
				down = append(down, addr)
				break
			}
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("nodes %s are failing: their files still hold what this sweep deleted until they rejoin and the next sweep runs", strings.Join(down, ", "))
	}
	return nil
}

// rewriteAOF has node n rewrite its AOF from what it holds now and waits
// until a rewrite that started after the call has finished: Redis 7
// then drops the old base and incremental files, and with them the
// deleted records. A node without AOF has none to rewrite.
func rewriteAOF(ctx context.Context, n *redis.Client) error {
	p, err := persistence(ctx, n)
	if err != nil {
		return err
	}
	if p["aof_enabled"] != "1" {
		return nil
	}
	before, err := strconv.ParseInt(p["aof_rewrites"], 10, 64)
	if err != nil {
		return fmt.Errorf("INFO persistence: aof_rewrites: %w", err)
	}
	// A rewrite already running took its copy before the deletions:
	// Redis then schedules this one after it.
	if err := n.BgRewriteAOF(ctx).Err(); err != nil {
		return err
	}
	return poll(ctx, "the AOF rewrite", func() (bool, error) {
		p, err := persistence(ctx, n)
		if err != nil {
			return false, err
		}
		done, _ := strconv.ParseInt(p["aof_rewrites"], 10, 64)
		if p["aof_rewrite_in_progress"] != "0" || p["aof_rewrite_scheduled"] != "0" || done <= before {
			return false, nil
		}
		if st := p["aof_last_bgrewrite_status"]; st != "ok" {
			return false, fmt.Errorf("aof_last_bgrewrite_status:%s", st)
		}
		return true, nil
	})
}

// snapshot has node n write a fresh RDB file and waits until it is done.
// Whatever RDB file the node held (a timed snapshot, or one a replica
// kept from a full resynchronisation) is replaced by one of what it holds
// now.
func snapshot(ctx context.Context, n *redis.Client) error {
	p, err := persistence(ctx, n)
	if err != nil {
		return err
	}
	before, err := strconv.ParseInt(p["rdb_saves"], 10, 64)
	if err != nil {
		return fmt.Errorf("INFO persistence: rdb_saves: %w", err)
	}
	if err := n.Do(ctx, "BGSAVE", "SCHEDULE").Err(); err != nil {
		return err
	}
	return poll(ctx, "the snapshot", func() (bool, error) {
		p, err := persistence(ctx, n)
		if err != nil {
			return false, err
		}
		done, _ := strconv.ParseInt(p["rdb_saves"], 10, 64)
		if p["rdb_bgsave_in_progress"] != "0" || done <= before {
			return false, nil
		}
		if st := p["rdb_last_bgsave_status"]; st != "ok" {
			return false, fmt.Errorf("rdb_last_bgsave_status:%s", st)
		}
		return true, nil
	})
}

func persistence(ctx context.Context, n *redis.Client) (map[string]string, error) {
	text, err := n.Info(ctx, "persistence").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// field reads "name:value" from an INFO answer.
func field(text, name string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// poll asks done every pollEvery until it says true, fails, or ctx ends.
func poll(ctx context.Context, what string, done func() (bool, error)) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// Inventory reports the replay records and aggregate counts held, cheaply
// at any size: DBSIZE of each master (O(1)) and the index of counted days.
// It assumes the cluster's database 0 holds this store's keys alone, as a
// deployment should run it: the replay figure is every key on the masters
// but the aggregate counts and their index. It includes records past their
// deadline that Redis has not deleted yet (it deletes them lazily, or the
// next Sweep does). Oldest and NextDeadline are given for counts (the
// earliest day held, the earliest deadline); for replay records they are
// not known without a scan, and left nil.
func (s *Store) Inventory(ctx context.Context) ([]issuer.CategoryStat, error) {
	var days []redis.Z
	err := s.retrying(ctx, func() error {
		var err error
		days, err = s.c.ZRangeWithScores(ctx, s.countIndex(), 0, -1).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: inventory: aggregate counts: %w", err)
	}
	counts := issuer.CategoryStat{Name: issuer.CategoryCounts, Count: len(days)}
	countKeys := []string{s.countIndex()}
	for i, z := range days {
		day, err := strconv.ParseInt(fmt.Sprint(z.Member), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisstore: inventory: stored day %q is malformed", z.Member)
		}
		countKeys = append(countKeys, s.countKey(time.Unix(day, 0)))
		if d := time.Unix(day, 0).UTC(); counts.Oldest == nil || d.Before(*counts.Oldest) {
			counts.Oldest = &d
		}
		if i == 0 { // sorted by deadline
			next := time.UnixMilli(int64(z.Score)).UTC()
			counts.NextDeadline = &next
		}
	}
	// The count keys Redis still holds (one slot: one EXISTS).
	var held int64
	err = s.retrying(ctx, func() error {
		var err error
		held, err = s.c.Exists(ctx, countKeys...).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: inventory: aggregate counts: %w", err)
	}
	var mu sync.Mutex
	var total int64
	err = s.c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: inventory: %w", err)
	}
	replay := issuer.CategoryStat{Name: issuer.CategoryReplay, Count: int(max(total-held, 0))}
	return []issuer.CategoryStat{replay, counts}, nil
}
