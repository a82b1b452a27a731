# infra/lib.sh — helpers shared by the infra scripts (sourced, never run on its own).
#
# The sourcing script defines `say MESSAGE` (to stderr) and `die MESSAGE` (say, then exit 1). Sourcing sets
# CACHE_DIR: where virtualenvs and downloads are kept, ${TRACE_CACHE_DIR:-~/.cache/trace-jobs}, made absolute
# (services and tools run from other working directories).

CACHE_DIR="${TRACE_CACHE_DIR:-$HOME/.cache/trace-jobs}"
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"

# find_python MINOR: prints the path of a python3 >= 3.MINOR that has the venv module. Tries python3.N on
# PATH and pyenv's installed versions (3.13 first, then 3.12, then newer, then older, newest patch release
# first; free-threaded builds skipped), then python3. Each candidate is run to check its version: pyenv
# shims exist on PATH but fail when their version is not selected.
find_python() {
  local min="$1" pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}" minor c
  local candidates=()
  for minor in 13 12 14 15 16 17 18 19 11 10 9; do
    ((minor >= min)) || continue
    candidates+=("python3.$minor")
    while IFS= read -r c; do
      [[ -x "$c" && "$c" != *t/bin/python3 ]] && candidates+=("$c")
    done < <(printf '%s\n' "$pyenv_root"/versions/3."$minor".*/bin/python3 | sort -rV)
  done
  candidates+=(python3)
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c "import sys, venv; sys.exit(0 if sys.version_info >= (3, $min) else 1)" >/dev/null 2>&1; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# ensure_venv WHO NAME PYTHON HINT PKG...: makes sure $CACHE_DIR/NAME is a virtualenv (made with PYTHON)
# holding PKG... WHO prefixes the messages; HINT says how long a first install takes. A marker written
# after a successful install records what was installed: a venv without it (an interrupted install),
# with other packages or with a broken interpreter is rebuilt. Builds of one venv are serialised (clones
# and concurrent tests share the cache).
ensure_venv() {
  local who="$1" name="$2" python="$3" hint="$4"
  shift 4
  local venv="$CACHE_DIR/$name" spec="$*" log="$CACHE_DIR/$name.install.log"
  local marker="$venv/.trace-venv-ok"
  mkdir -p "$CACHE_DIR"
  (
    if command -v flock >/dev/null 2>&1; then
      exec 8>"$CACHE_DIR/$name.lock"
      flock 8
    fi
    if [[ -f "$marker" && "$(cat "$marker")" == "$spec" ]] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
      exit 0
    fi
    local t0=$SECONDS
    say "$who: building $venv ($("$python" -V 2>&1)): pip install $spec"
    say "$who:   (first time only, $hint; log: $log)"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >"$log" 2>&1; then
      tail -n 30 "$log" | sed 's/^/  | /' >&2
      die "could not create a virtualenv with $python (on Debian: apt-get install -y python3-venv)"
    fi
    if ! "$venv/bin/python" -m pip install --no-input "$@" >>"$log" 2>&1; then
      tail -n 30 "$log" | sed 's/^/  | /' >&2
      die "pip install into $venv failed"
    fi
    printf '%s' "$spec" >"$marker"
    say "$who:   venv ready in $((SECONDS - t0)) s"
  )
}
