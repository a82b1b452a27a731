#!/usr/bin/env bash
# infra/test.sh — THE test command (README, CI): bring up a private service stack, load the reference
# dataset, run every test, take the stack down (also on failure or Ctrl-C).
#
#   infra/test.sh [cargo test arguments…]      e.g. infra/test.sh -p trace-integration --test it jobs_contract::
#
# The stack lives in its own state dir (default <repo>/.stack/test), so a development stack started
# with `infra/local-stack.sh up` is left alone. Variables: see infra/local-stack.sh; TRACE_TEST_IDS
# (default 114000) sets how many container ids are loaded.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"
export TRACE_STACK_DIR="${TRACE_STACK_DIR:-$REPO_ROOT/.stack/test}"
SEED_IDS="${TRACE_TEST_IDS:-114000}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "infra/test.sh: cargo not found. Install the Rust toolchain (https://rustup.rs) and run again." >&2
  exit 1
fi

stack_down() { infra/local-stack.sh down || true; }
trap stack_down EXIT
trap 'exit 130' INT TERM

# Build first: the stack's start-up and the compile overlap nothing, but a compile error should not
# wait for emulators. Everything below runs what this build made: `cargo run -p trace-bootstrap` would
# resolve the features of that one package and compile the AWS SDK a second time.
cargo build --workspace --all-targets
BIN_DIR="${CARGO_TARGET_DIR:-target}/debug"

infra/local-stack.sh up
eval "$(infra/local-stack.sh env)"
echo "== stack: emulator=${TRACE_EMULATOR} endpoint=${AWS_ENDPOINT_URL} redis=${REDIS_URL} postgres=${DATABASE_URL}" >&2

"$BIN_DIR/trace-bootstrap" seed --ids "$SEED_IDS"
export TRACE_TEST_IDS="$SEED_IDS"

cargo test --workspace "$@"
