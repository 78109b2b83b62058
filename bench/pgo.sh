#!/bin/sh
# A profile-guided (PGO) release build of sluice, of the floor (examples/hyper_floor.rs) and of
# the raw line (examples/raw_floor.rs), all from one profile, so that their comparison stays even:
#   1. an instrumented build (-Cprofile-generate) into TARGET-gen;
#   2. a training load: bench/compare.py's HTTP/1.1, HTTPS/1.1, HTTP/2 and h2c scenarios
#      against each (their processes write raw profiles when they exit on SIGTERM);
#   3. llvm-profdata merges the profiles (its major version must be rustc's LLVM's:
#      `apt-get install llvm-NN`, NN from `rustc -vV`);
#   4. the optimized build (-Cprofile-use) into TARGET.
# Then: python3 bench/compare.py --target-dir TARGET
#
#   bench/pgo.sh [TARGET]          (default: target/pgo)
set -eu
cd "$(dirname "$0")/.."
out=${1:-target/pgo}
gen="$out-gen"
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=$(command -v "llvm-profdata-$llvm" || command -v llvm-profdata || true)
if [ -z "$profdata" ]; then
    echo "pgo.sh: llvm-profdata for LLVM $llvm not found (apt-get install llvm-$llvm)" >&2
    exit 1
fi
prof=$(mktemp -d /tmp/sluice-pgo.XXXXXX)
trap 'rm -rf "$prof"' EXIT
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$prof" \
    cargo build --release --bin sluice --example hyper_floor --example raw_floor --target-dir "$gen"
LLVM_PROFILE_FILE="$prof/%p.profraw" python3 bench/compare.py --target-dir "$gen" \
    --scenarios plain,https1,h2,h2c --targets floor,raw,sluice,sluice-flags --rounds 1 --secs 3
if ! ls "$prof"/*.profraw >/dev/null 2>&1; then
    echo "pgo.sh: the training load wrote no profiles to $prof (the instrumented processes write them when they exit on SIGTERM; see compare.py's output above)" >&2
    exit 1
fi
"$profdata" merge -o "$prof/merged.profdata" "$prof"/*.profraw
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$prof/merged.profdata" \
    cargo build --release --bin sluice --example hyper_floor --example raw_floor --target-dir "$out"
echo "pgo.sh: built $out/release/sluice and $out/release/examples/{hyper_floor,raw_floor}"
