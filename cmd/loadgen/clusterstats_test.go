package main

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer/issuertest"
)

// TestRunGoesRoundRobin: with More, requests alternate over the issuers.
// Two issuers that trust different attesters: the half sent to the one
// that does not know the key are refused.
func TestRunGoesRoundRobin(t *testing.T) {
	a, b := issuertest.Start(t), issuertest.Start(t)
	res, err := Run(context.Background(), Config{URL: a.URL, More: []string{b.URL}, Key: a.AttesterKey, AttesterID: a.AttesterID,
		Concurrency: 1, Duration: 10 * time.Second, Requests: 20, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 10 || res.ErrorCount != 10 || len(res.More) != 1 {
		t.Fatalf("ok %d, errors %v; want 10 and 10", res.OK, res.Errors)
	}
	if _, err := Run(context.Background(), Config{URL: a.URL, More: []string{"http://10.0.0.1:80"}, Key: a.AttesterKey,
		AttesterID: a.AttesterID, Concurrency: 1, Duration: time.Second, Requests: 1, Timeout: time.Second}); err == nil ||
		!strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("a non-loopback replica: %v", err)
	}
}

func TestParseRedisInfo(t *testing.T) {
	text := "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\r\n# Memory\r\nused_memory:2000000\r\nused_memory_dataset:1500000\r\n" +
		"# Stats\r\ntotal_reads_processed:77\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_cluster|slots:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n" +
		"# Keyspace\r\ndb0:keys=12,expires=11,avg_ttl=0\r\n"
	r, err := parseRedisInfo(text)
	if err != nil {
		t.Fatal(err)
	}
	if !r.master || r.usedMemory != 2000000 || r.datasetMem != 1500000 || r.keys != 12 || r.readsEvents != 77 ||
		r.calls["evalsha"] != 10 || r.calls["cluster|slots"] != 3 || len(r.calls) != 2 {
		t.Fatalf("%+v", r)
	}
	if r, err := parseRedisInfo("role:slave\r\n"); err != nil || r.master {
		t.Fatalf("replica: %+v %v", r, err)
	}
	if _, err := parseRedisInfo("used_memory:lots\r\n"); err == nil || !strings.Contains(err.Error(), "used_memory") {
		t.Fatalf("bad number: %v", err)
	}
}

func TestParseEtcdMetrics(t *testing.T) {
	text := `# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 40
grpc_server_handled_total{grpc_code="DeadlineExceeded",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="OK",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 1
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3
grpc_server_msg_received_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
etcd_debugging_mvcc_put_total 5
`
	m, err := parseEtcdMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"Txn": 42, "Range": 7, "Watch (stream msgs)": 3}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Fatalf("got %v, want %v", m, want)
		}
	}
}

func TestPerRedemptionAndCPU(t *testing.T) {
	per, total := perRedemption(map[string]int64{"evalsha": 100, "wait": 50, "info": 3},
		map[string]int64{"evalsha": 300, "wait": 150, "info": 9, "cluster|slots": 1}, 100, redisNotPerRedemption)
	if per["evalsha"] != 2 || per["wait"] != 1 || !near(per["cluster|slots"], 0.01) || per["info"] != 0 || !near(total, 3.01) {
		t.Fatalf("%v %v", per, total)
	}
	if got := breakdown(per); got != "evalsha 2.00, wait 1.00, cluster|slots 0.01" {
		t.Fatalf("breakdown %q", got)
	}
	// 2 s of CPU over 1,000 redemptions in 10 s, with 0.05 s/s idle.
	k := kindCPU(procGroup{"etcd", []int{1, 2, 3}}, cpuTicks{0, 0}, cpuTicks{10, 5}, cpuTicks{100, 0}, cpuTicks{250, 50},
		3*time.Second, 10*time.Second, 1000)
	if k.Processes != 3 || !near(k.Seconds, 2) || !near(k.IdlePerS, 0.05) || !near(k.PerRedemptionUs, 2000) || !near(k.NetPerRedemptionUs, 1500) {
		t.Fatalf("%+v", k)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
