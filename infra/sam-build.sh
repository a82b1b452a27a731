#!/usr/bin/env bash
# sam-build.sh — `sam build` without a prompt: the functions compiled by cargo-lambda for the
# architecture samconfig.toml names, with the workspace's [profile.release].
#
# Usage: infra/sam-build.sh [--arch arm64|x86_64] [more sam build options...]
#   --arch   build for this architecture instead of samconfig.toml's (Architecture=arm64); deploy then
#            with the same override: sam deploy --parameter-overrides Architecture=<arch>
#
# Reads samconfig.toml ([default.global.parameters] parameter_overrides picks the architecture for the
# build and the deploy alike; [default.build.parameters] beta_features = true, without which the
# rust-cargolambda build method stops at a y/N prompt). Stdin is closed, so a prompt fails at once
# instead of waiting. Installs aws-sam-cli and cargo-lambda (pinned; cargo-lambda brings zig for the
# cross-compilation) into a virtualenv under ${TRACE_CACHE_DIR:-~/.cache/trace-jobs} on first use.
# Needs no AWS credentials and no Docker. Output: .aws-sam/build (and template.yaml there).
#
# Not run in CI: a cold build of the seven functions takes minutes (one codegen unit, thin LTO; 1,701 s
# measured on a 2-vCPU VM). Run it alone: cached builds hash the whole checkout, target/ included, and a
# cargo command running meanwhile can delete a file being hashed.
set -euo pipefail

readonly SAM_CLI_VERSION=1.170.0
readonly CARGO_LAMBDA_VERSION=1.9.2

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
VENV_NAME="venv-sam-build"

say() { printf '%s\n' "$*" >&2; }
die() { say "sam-build: error: $*"; exit 1; }

# find_python, ensure_venv, CACHE_DIR
# shellcheck source=infra/lib.sh
source "$SCRIPT_DIR/lib.sh"
VENV="$CACHE_DIR/$VENV_NAME"

args=()
arch=""
while (($#)); do
  case "$1" in
    --arch) arch="${2:-}"; shift 2 ;;
    --arch=*) arch="${1#--arch=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
case "$arch" in
  "") ;;
  arm64 | x86_64) args+=(--parameter-overrides "Architecture=$arch") ;;
  *) die "--arch must be arm64 or x86_64, not '$arch'" ;;
esac

command -v cargo >/dev/null 2>&1 || die "no cargo on PATH (rustup: https://rustup.rs)"
python="$(find_python 9)" || die "no python3 >= 3.9 with the venv module found"
ensure_venv sam-build "$VENV_NAME" "$python" "~1 min" \
  "aws-sam-cli==${SAM_CLI_VERSION}" "cargo-lambda==${CARGO_LAMBDA_VERSION}"
# `cargo lambda` is cargo-lambda on PATH; zig (python-zig) comes with it.
export PATH="$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0

cd "$REPO_ROOT"
[[ -f samconfig.toml ]] || die "no samconfig.toml in $REPO_ROOT"
grep -Eq '^beta_features *= *true' samconfig.toml || die "samconfig.toml does not turn beta_features on: sam build would prompt"
if [[ -n "$arch" ]]; then
  say "== sam-build: Architecture=$arch (deploy with: sam deploy --parameter-overrides Architecture=$arch)"
else
  say "== sam-build: $(grep -E '^parameter_overrides' samconfig.toml) (samconfig.toml)"
fi
t0=$SECONDS
sam build --config-file samconfig.toml "${args[@]}" </dev/null
say "== sam-build: done in $((SECONDS - t0)) s: .aws-sam/build"
