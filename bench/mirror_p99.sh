#!/usr/bin/env bash
# Client latency with and without `mirror` (README "Mirroring"): the same sluice (release
# build, one worker) in front of nginx backends, measured by wrk, alternating rounds.
#
#   cargo build --release --bin sluice
#   bench/mirror_p99.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# Configurations: `off` (no mirror), `10` (mirror 10% to a third backend), `100` (every
# request copied), `hang` (every request picked, the mirror never answers: max_in_flight
# copies out, the rest skipped), `step100` (the live step's mirror, every request copied),
# `route100` (the route's mirror, every request copied), `dark` (the live step mirrors every
# request to the canary, copies judged into the canary window). Prints wrk's p50/p99 and
# requests/s per round.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
D=$(mktemp -d /tmp/sluice-mirror-bench.XXXXXX)
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
  server { listen 127.0.0.1:9501; location / { return 200 "stable"; } }
  server { listen 127.0.0.1:9502; location / { return 200 "canary"; } }
  server { listen 127.0.0.1:9503; location / { return 200 "mirror"; } }
}
EOF
nginx -c "$D/backend.conf" & PIDS+=($!)
# The hanging mirror: accepts and never answers.
python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9504)); s.listen(4096); held = []
while True:
    c, _ = s.accept(); held.append(c)
' & PIDS+=($!)

traffic() { # $1: rollout mirror line or empty, $2: the step, $3: route mirror line or empty
  local step=$2
  [ -n "$step" ] || step="{ weight: 10 }"
  cat <<EOF
version: 1
change: { id: BENCH-1, author: bench, summary: "mirror p99" }
upstreams:
  stable: { endpoints: ["127.0.0.1:9501"] }
  canary: { endpoints: ["127.0.0.1:9502"] }
  shadow: { endpoints: ["127.0.0.1:9503"] }
  hung: { endpoints: ["127.0.0.1:9504"], request_timeout: 2s }
routes:
  - name: bench
    to: { rollout: bench }
$3
rollouts:
  bench:
    strategy: canary
    stable: stable
    canary: canary
    sticky: { header: x-user-id }
    steps: [$step]
$1
EOF
}

run_one() { # $1: name, $2: rollout mirror line, $3: step, $4: route mirror line
  rm -rf "$D/state" "$D/approvals"; mkdir -p "$D/approvals"
  traffic "$2" "${3:-}" "${4:-}" > "$D/traffic.yaml"
  cat > "$D/sluice.yaml" <<EOF
listeners:
  - { name: public, bind: "127.0.0.1:9490" }
admin: { bind: "127.0.0.1:9491" }
runtime: { workers: 1 }
paths: { traffic: $D/traffic.yaml, approvals: $D/approvals, state_dir: $D/state }
trust: { require_approvals: false }
EOF
  "$BIN" run -c "$D/sluice.yaml" > "$D/sluice.log" 2>&1 & local pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:9490/ && break; sleep 0.1; done
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency http://127.0.0.1:9490/ > "$D/wrk.txt"
  local p50 p99 rps
  p50=$(awk '$1=="50%"{print $2}' "$D/wrk.txt")
  p99=$(awk '$1=="99%"{print $2}' "$D/wrk.txt")
  rps=$(awk '/Requests\/sec/{print $2}' "$D/wrk.txt")
  local copies
  copies=$(curl -s http://127.0.0.1:9491/metrics | awk '/^sluice_requests_total\{.*variant="mirror"/{s+=$2} END{print s+0}')
  local skipped
  skipped=$(curl -s http://127.0.0.1:9491/metrics | awk '/^sluice_mirror_skipped_total/{s+=$2} END{print s+0}')
  echo "RESULT mirror=$1 p50=$p50 p99=$p99 rps=$rps mirror_answered_or_failed=$copies skipped=$skipped"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for r in $(seq "$ROUNDS"); do
  run_one off ""
  run_one 10 "    mirror: { upstream: shadow, percent: 10 }"
  run_one 100 "    mirror: { upstream: shadow, percent: 100 }"
  run_one hang "    mirror: { upstream: hung, percent: 100, max_in_flight: 64 }"
  run_one step100 "" "{ weight: 10, hold: 1h, mirror: { upstream: shadow, percent: 100 } }"
  run_one route100 "" "" "    mirror: { upstream: shadow, percent: 100 }"
  run_one dark "" "{ weight: 0, hold: 1h, mirror: { upstream: canary, percent: 100 } }"
done
