#!/usr/bin/env bash
# infra/bench.sh — THE benchmark command: a private service stack, release builds, trace-bench, stack down.
#
#   infra/bench.sh [--ids 114000] [--small 10000] [--repeat 5] [--out bench-results.json]
#                  [--only worker,stream,status,sync,msd]   (a subset of the parts; all by default)
#
# Prints one table (stdout) and writes the same figures as JSON. The stack lives in <repo>/.stack/bench.
# The binaries are built as `sam build` builds them (Cargo.toml's [profile.release], cargo-lambda's
# target-cpu), so the figures are those of the deployed code.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"
export TRACE_STACK_DIR="${TRACE_STACK_DIR:-$REPO_ROOT/.stack/bench}"
trap 'infra/local-stack.sh down || true' EXIT
# The deployed build: the workspace's [profile.release] (the one `sam build` uses through cargo-lambda),
# and cargo-lambda's target-cpu for x86_64 Lambda (haswell) when this machine has its instructions.
if [[ "$(uname -m)" == x86_64 ]] && grep -qw avx2 /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  export CARGO_BUILD_RUSTFLAGS="${CARGO_BUILD_RUSTFLAGS:+$CARGO_BUILD_RUSTFLAGS }-C target-cpu=haswell"
else
  echo "== bench: this CPU lacks haswell's instructions: built without cargo-lambda's target-cpu" >&2
fi
cargo build --release -p trace-bench -p trace-worker -p trace-stream -p trace-status -p trace-submit
infra/local-stack.sh up
eval "$(infra/local-stack.sh env)"
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), emulator ${TRACE_EMULATOR}" >&2
target/release/trace-bench "$@"
