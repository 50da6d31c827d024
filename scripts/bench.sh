#!/usr/bin/env bash
# Benchmarks for BENCHMARKS.md.
#
#   scripts/bench.sh report       Go benchmarks + a loadgen run, then the summary table (make bench)
#   scripts/bench.sh save NAME    Go benchmarks only, BENCH_COUNT times, raw output to bin/bench/NAME.txt
#                                 for benchstat (make bench-save NAME=old)
#
# Expects bin/issuer and bin/loadgen (make builds them). Load goes to
# 127.0.0.1 only: loadgen starts its own issuer on a free loopback port.
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
OUT=${BENCH_OUT:-bin/bench}
BENCH_LOAD_SECONDS=${BENCH_LOAD_SECONDS:-20}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-64}
mode=${1:-report}
case $mode in
report) COUNT=${BENCH_COUNT:-1}; raw=$OUT/go.txt ;;
save)
	name=${2:-}
	if [[ ! $name =~ ^[A-Za-z0-9._-]+$ ]]; then
		echo "bench.sh: save needs a NAME of letters, digits, '.', '-' or '_'" >&2
		exit 2
	fi
	COUNT=${BENCH_COUNT:-6}; raw=$OUT/$name.txt ;;
*) echo "usage: scripts/bench.sh report | save NAME" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
: >"$raw"
failed=()

# gobench PKG PATTERN BENCHTIME: one package's benchmarks, appended to $raw.
# A package that does not build or fails is noted and the rest still run.
gobench() {
	echo "== go test -bench '$2' -benchtime $3 -count $COUNT $1" >&2
	if ! $GO test -run='^$' -bench="$2" -benchtime="$3" -count="$COUNT" -timeout 10m "$1" >>"$raw" 2>&1; then
		failed+=("$1 ($2)")
	fi
}

gobench ./verifier/ '^Benchmark(Verify|BareEd25519Verify|VerifyRatio)$' 1s
gobench ./qr/ '^Benchmark(PNG|Decode|BareEd25519Sign|PNGRatio)$' 1s
gobench ./issuer/ '^Benchmark(Redeem|RedeemParallel|BareSignBatch|BareSignBatchParallel|RedeemRatio|QRDecodeVerify|TokenSize)$' 1s
# Rounds of 256 redemptions vs 256 batches of bare signatures, alternating.
gobench ./issuer/ '^BenchmarkRedeemParallelRatio$' 8x
# Rounds of 256 redemptions over HTTP vs 256 in-process, alternating.
gobench ./issuer/ '^BenchmarkHTTPRatio$' 8x
gobench ./issuer/boltstore/ '^BenchmarkSweep1M$' 1x
gobench ./issuer/boltstore/ '^BenchmarkRedeemParallel$' 1s
# Chromium: a few scans (the fake camera shows a new code every second).
gobench ./web/ '^BenchmarkScanToVerdict$' 5x

if [[ $mode == save ]]; then
	echo "raw benchmark output in $raw" >&2
	echo "compare: go run golang.org/x/perf/cmd/benchstat@latest $OUT/old.txt $OUT/new.txt" >&2
else
	echo "== loadgen --issuer bin/issuer --duration ${BENCH_LOAD_SECONDS}s --concurrency $LOAD_CONCURRENCY" >&2
	if ! bin/loadgen --issuer bin/issuer --duration "${BENCH_LOAD_SECONDS}s" --concurrency "$LOAD_CONCURRENCY" --json >"$OUT/load.json"; then
		# loadgen exits 1 when requests failed; the table shows them.
		[[ -s $OUT/load.json ]] || failed+=("loadgen")
	fi
	load_arg=()
	[[ -s $OUT/load.json ]] && load_arg=(--load "$OUT/load.json")
	echo
	bin/loadgen report --go "$raw" "${load_arg[@]}" | tee "$OUT/summary.txt"
	echo
	echo "raw output: $raw, $OUT/load.json; table: $OUT/summary.txt"
fi
if ((${#failed[@]})); then
	echo "bench.sh: these did not complete (see $raw): ${failed[*]}" >&2
	exit 1
fi
