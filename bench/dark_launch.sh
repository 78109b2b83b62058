#!/usr/bin/env bash
# A dark launch rolled back on its mirror copies (README "Mirroring"): a step at weight 0
# mirrors every request to a canary that answers 500; stable answers 200. Measures the time
# from the first request to the rollback (`sluice_rollout_phase{phase="aborted"}` = 1 on
# /metrics, polled every 10 ms) and what clients saw (wrk's non-2xx count must be 0).
#
#   cargo build --release --bin sluice
#   bench/dark_launch.sh [ROUNDS] [CONNECTIONS]
set -euo pipefail
ROUNDS=${1:-5}
CONNS=${2:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
D=$(mktemp -d /tmp/sluice-dark-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT

cat > "$D/backend.conf" <<EOF
daemon off;
worker_processes 1;
pid $D/nginx.pid;
error_log $D/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:9511; location / { return 200 "stable"; } }
  server { listen 127.0.0.1:9512; location / { return 500 "canary"; } }
}
EOF
nginx -c "$D/backend.conf" & PIDS+=($!)

cat > "$D/traffic.yaml" <<EOF
version: 1
change: { id: BENCH-1, author: bench, summary: "dark launch" }
upstreams:
  stable: { endpoints: ["127.0.0.1:9511"] }
  canary: { endpoints: ["127.0.0.1:9512"] }
routes:
  - name: bench
    to: { rollout: dark }
rollouts:
  dark:
    strategy: canary
    stable: stable
    canary: canary
    sticky: { header: x-user-id }
    steps:
      - { weight: 0, hold: 10m, mirror: { upstream: canary, percent: 100 } }
      - { weight: 100 }
    analysis: { min_requests: 50, max_error_rate: 0.05 }
EOF
cat > "$D/sluice.yaml" <<EOF
listeners:
  - { name: public, bind: "127.0.0.1:9590" }
admin: { bind: "127.0.0.1:9591" }
runtime: { workers: 1 }
paths: { traffic: $D/traffic.yaml, approvals: $D/approvals, state_dir: $D/state }
trust: { require_approvals: false }
EOF

for r in $(seq "$ROUNDS"); do
  rm -rf "$D/state" "$D/approvals"; mkdir -p "$D/approvals"
  "$BIN" run -c "$D/sluice.yaml" > "$D/sluice.log" 2>&1 & pid=$!
  for _ in $(seq 100); do
    curl -s http://127.0.0.1:9591/metrics | grep -q 'sluice_rollout_phase{rollout="dark",phase="progressing"} 1' && break
    sleep 0.1
  done
  t0=$(date +%s%N)
  wrk -t1 -c"$CONNS" -d5s http://127.0.0.1:9590/ > "$D/wrk.txt" & wrk=$!
  took=timeout
  while kill -0 "$wrk" 2>/dev/null; do
    if curl -s http://127.0.0.1:9591/metrics | grep -q 'sluice_rollout_phase{rollout="dark",phase="aborted"} 1'; then
      took=$(( ($(date +%s%N) - t0) / 1000000 ))ms
      break
    fi
    sleep 0.01
  done
  wait "$wrk" || true
  non2xx=$(awk '/Non-2xx/{print $NF}' "$D/wrk.txt"); non2xx=${non2xx:-0}
  reqs=$(awk '/requests in/{print $1}' "$D/wrk.txt")
  reason=$(curl -s http://127.0.0.1:9591/metrics | awk '/^sluice_rollbacks_total\{rollout="dark"/ && $NF > 0 {split($1,a,"reason=\""); split(a[2],b,"\""); print b[1]}')
  echo "RESULT round=$r rolled_back_after=$took reason=$reason client_requests=$reqs client_non2xx=$non2xx"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
