#!/usr/bin/env bash
# local-stack.sh — a private local service stack for development and tests, without a Docker engine.
#
# Usage: infra/local-stack.sh up|down|env|status
#
#   up      Install what is missing, then start on free loopback ports:
#             - an AWS emulator (SQS, S3, Secrets Manager): LocalStack as a plain process, or moto as a fallback;
#             - a private Redis;
#             - a throwaway PostgreSQL cluster with a database `trace` (unless DATABASE_URL is set), with
#               ssl=on (plain connections still accepted);
#           and the secure shapes of the managed services, with certificates of a throwaway CA made
#           with openssl in <state>/tls (SAN localhost and 127.0.0.1):
#             - a Redis that speaks TLS only;
#             - a 3-master Redis Cluster.
#           Idempotent: when the stack is already up and healthy it only prints its summary.
#           Writes <state>/env. Prints a human summary on stderr, nothing on stdout.
#   env     Print <state>/env as `export KEY=VALUE` lines:  eval "$(infra/local-stack.sh env)"
#           Exit 1 when the stack is not up.
#   status  One line per service (process alive + health check). Exit 0 when all are up, 3 otherwise.
#   down    Stop everything `up` started, delete the PostgreSQL data and the env file. Always exits 0.
#
# Variables honoured:
#   TRACE_STACK_DIR  state dir: pid files, logs, PostgreSQL data, env file   (default: <repo>/.stack)
#   TRACE_CACHE_DIR  virtualenvs, shared by every clone                      (default: ~/.cache/trace-jobs)
#   TRACE_EMULATOR   auto | localstack | moto   (default auto: LocalStack when a Python >= 3.12 exists)
#   DATABASE_URL     when set, used as is and no PostgreSQL is started
#   GATEWAY_SERVER   LocalStack's HTTP server (default here: hypercorn). LocalStack's own default, twisted,
#                    ignores the host in GATEWAY_LISTEN and listens on ALL interfaces; hypercorn binds
#                    127.0.0.1 only. Set GATEWAY_SERVER=twisted to get LocalStack's default anyway.
#
# Never touches system-wide services (5432, 6379, ...): every service is a private instance.
# Needs: python3 (>= 3.9; >= 3.12 for LocalStack), curl, openssl, redis-server (with TLS, as Debian's),
# PostgreSQL server binaries.
# As root it installs missing Debian packages with apt-get; otherwise it prints what to install.
set -euo pipefail

readonly LOCALSTACK_VERSION=2026.3.0
readonly LOCALSTACK_PIP=("localstack-core[runtime]==${LOCALSTACK_VERSION}" 'cbor2<6' 'pyopenssl>=25,<26'
  'cryptography>=45,<47' service-identity)
readonly MOTO_PIP=('moto[s3,sqs]' flask flask-cors)
readonly AWS_REGION_DEFAULT=us-east-1
readonly EMULATOR_TIMEOUT=90   # seconds for the emulator to report healthy
readonly SERVICE_TIMEOUT=30    # seconds for Redis / PostgreSQL

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
STATE_DIR="${TRACE_STACK_DIR:-$REPO_ROOT/.stack}"
# Absolute paths: services run from other working directories.
[[ "$STATE_DIR" == /* ]] || STATE_DIR="$PWD/$STATE_DIR"
ENV_FILE="$STATE_DIR/env"
STATE_FILE="$STATE_DIR/stack.state"   # KEY=VALUE facts about what `up` started, read by status/down
PROG="infra/local-stack.sh"

# ---------------------------------------------------------------------------------------------------------
# small helpers

say() { printf '%s\n' "$*" >&2; }
die() { say "local-stack: error: $*"; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# find_python, ensure_venv, CACHE_DIR
# shellcheck source=infra/lib.sh
source "$SCRIPT_DIR/lib.sh"
short() { local p="$1"; printf '%s' "${p#"$REPO_ROOT"/}"; }

# Print the last lines of a log file, indented, after a start failure.
log_tail() {
  local file="$1"
  if [[ -s "$file" ]]; then
    say "---- last lines of $file ----"
    tail -n 30 "$file" | sed 's/^/  | /' >&2
    say "----"
  else
    say "(log $file is empty or missing)"
  fi
}

state_get() { # state_get KEY -> value or empty
  [[ -f "$STATE_FILE" ]] || return 0
  sed -n "s/^$1=//p" "$STATE_FILE" | tail -n 1
}
state_set() { # state_set KEY VALUE (replaces any previous value)
  local tmp="$STATE_FILE.tmp.$$"
  { [[ -f "$STATE_FILE" ]] && grep -v "^$1=" "$STATE_FILE" || true; printf '%s=%s\n' "$1" "$2"; } >"$tmp"
  mv -f "$tmp" "$STATE_FILE"
}

# A zombie (exited, not yet reaped by its parent, e.g. a daemon re-parented to a lazy init) counts as dead.
pid_alive() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && (($1 > 1)) && kill -0 "$1" 2>/dev/null &&
    ! awk '{ exit ($3 == "Z" ? 0 : 1) }' "/proc/$1/stat" 2>/dev/null
}
# pid_is PID WORD: the pid is alive and its command line mentions WORD (guards against pid reuse).
pid_is() { pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"; }
rss_mb() { awk '/^VmRSS/ { printf "%d MB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || true; }

# HTTP status code of a GET ("000" when nothing answers).
http_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" 2>/dev/null || true
}
http_body() { curl -fsS --max-time 3 "$1" 2>/dev/null || true; }

# A python3 (any version) for small helper snippets.
any_python() {
  local c
  for c in python3 python3.13 python3.12 python3.11 python3.10 python3.9; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys' >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

# free_ports N: print N distinct free loopback TCP ports (all bound at once, so they differ).
free_ports() {
  local n="$1" py
  if py="$(any_python)"; then
    "$py" - "$n" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    return
  fi
  # Fallback without python: random high ports nobody answers on.
  local ports=() p
  while ((${#ports[@]} < n)); do
    p=$((20000 + RANDOM % 30000))
    [[ " ${ports[*]} " == *" $p "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    ports+=("$p")
  done
  echo "${ports[*]}"
}

# Run a command with file descriptors 9 (our lock) closed and stdio detached, in its own session.
detach() { setsid "$@" </dev/null 9>&- & }

# apt_install PKG...: install Debian packages when root, else print the command and exit 1.
apt_install() {
  if ! is_root; then
    die "missing $*; install it with:  sudo apt-get install -y $*   (or your OS's equivalent) and rerun"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing $* and apt-get is not available: install $* yourself"
  say "local-stack: installing $* with apt-get ..."
  local log="$STATE_DIR/apt.log"
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; } >"$log" 2>&1; then
    log_tail "$log"
    die "apt-get install -y $* failed"
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Python / virtualenvs

# ---------------------------------------------------------------------------------------------------------
# AWS emulator (LocalStack or moto)

# choose_emulator -> sets EMU_KIND and EMU_PYTHON
choose_emulator() {
  local want="${TRACE_EMULATOR:-auto}" py
  case "$want" in
    auto | localstack | moto) ;;
    *) die "TRACE_EMULATOR must be auto, localstack or moto (got '$want')" ;;
  esac
  if [[ "$want" != moto ]]; then
    if py="$(find_python 12)"; then
      EMU_KIND=localstack EMU_PYTHON="$py"; return
    fi
    if [[ "$want" == localstack ]]; then
      die "TRACE_EMULATOR=localstack but no Python >= 3.12 found (looked for python3.13, python3.12 on PATH and ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.1[2-9]*); install one (e.g. pyenv install 3.13) or use TRACE_EMULATOR=moto"
    fi
    say "local-stack: no Python >= 3.12 found: using moto instead of LocalStack"
  fi
  py="$(find_python 9)" || die "moto needs a python3 >= 3.9 with the venv module (on Debian: apt-get install -y python3 python3-venv)"
  EMU_KIND=moto EMU_PYTHON="$py"
}

emulator_healthy() { # emulator_healthy KIND PORT
  local kind="$1" port="$2" body code
  if [[ "$kind" == localstack ]]; then
    body="$(http_body "http://127.0.0.1:$port/_localstack/health")"
    grep -Eq '"sqs": *"(available|running)"' <<<"$body" && grep -Eq '"s3": *"(available|running)"' <<<"$body" &&
      grep -Eq '"secretsmanager": *"(available|running)"' <<<"$body"
  else
    code="$(http_code "http://127.0.0.1:$port/moto-api/")"   # its dashboard page: cheap, stateless
    [[ "$code" == 200 ]]
  fi
}

start_emulator() {
  local port="$1" log venv pid t0 deadline
  t0="$(now)"
  choose_emulator
  # The emulator must not see endpoints or python settings from the caller's shell.
  local clean_env=(env -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_SQS -u AWS_ENDPOINT_URL_S3 -u PYTHONPATH
    -u PYTHONHOME -u VIRTUAL_ENV)
  if [[ "$EMU_KIND" == localstack ]]; then
    venv="venv-localstack-$LOCALSTACK_VERSION"
    ensure_venv local-stack "$venv" "$EMU_PYTHON" "takes 1-2 minutes, ~500 MB" "${LOCALSTACK_PIP[@]}"
    log="$STATE_DIR/localstack.log"
    rm -rf "$STATE_DIR/localstack"
    mkdir -p "$STATE_DIR/localstack"
    t0="$(now)"
    (cd "$STATE_DIR" && detach "${clean_env[@]}" \
      OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$STATE_DIR/localstack" SERVICES=sqs,s3,secretsmanager \
      GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" SQS_ENDPOINT_STRATEGY=path \
      DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 GATEWAY_SERVER="${GATEWAY_SERVER:-hypercorn}" \
      "$CACHE_DIR/$venv/bin/python" -m localstack.runtime.main >"$log" 2>&1
      echo $! >"$STATE_DIR/emulator.pid")
  else
    venv="venv-moto"
    ensure_venv local-stack "$venv" "$EMU_PYTHON" "takes ~15 s" "${MOTO_PIP[@]}"
    log="$STATE_DIR/moto.log"
    t0="$(now)"
    (cd "$STATE_DIR" && detach "${clean_env[@]}" "$CACHE_DIR/$venv/bin/moto_server" -H 127.0.0.1 -p "$port" \
      >"$log" 2>&1
      echo $! >"$STATE_DIR/emulator.pid")
  fi
  pid="$(cat "$STATE_DIR/emulator.pid")"
  state_set EMU_KIND "$EMU_KIND"
  state_set EMU_PORT "$port"
  state_set EMU_PID "$pid"
  state_set EMU_LOG "$log"

  deadline=$((SECONDS + EMULATOR_TIMEOUT))
  until emulator_healthy "$EMU_KIND" "$port"; do
    if ! pid_alive "$pid"; then
      log_tail "$log"; die "$EMU_KIND exited during start-up (port $port)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$log"; die "$EMU_KIND did not become healthy on port $port within ${EMULATOR_TIMEOUT}s"
    fi
    sleep 0.25
  done
  EMU_READY_S="$(elapsed "$t0")"
}

stop_emulator() {
  local pid kind
  pid="$(state_get EMU_PID)"; kind="$(state_get EMU_KIND)"
  [[ -n "$pid" ]] || return 0
  if pid_is "$pid" "${kind:-python}"; then
    # The emulator leads its own process group (setsid): stop the whole group. Its state is throwaway,
    # so do not wait for LocalStack's slow (~5 s) graceful shutdown.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local n
    for ((n = 0; n < 30; n++)); do pid_alive "$pid" || break; sleep 0.1; done
    # Then whatever is left of the group (a stuck leader, children that outlived it).
    kill -KILL -- "-$pid" 2>/dev/null || true
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    say "local-stack: stopped $kind (pid $pid)"
  fi
  rm -f "$STATE_DIR/emulator.pid"
  rm -rf "$STATE_DIR/localstack"
}

# ---------------------------------------------------------------------------------------------------------
# Redis

redis_healthy() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }

start_redis() {
  local port="$1" t0 deadline log="$STATE_DIR/redis.log" pidfile="$STATE_DIR/redis.pid"
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server   # Debian's package does not auto-start here, and we never use its instance
  fi
  t0="$(now)"
  rm -f "$pidfile"
  state_set REDIS_PORT "$port"
  # shellcheck disable=SC2094  # errors before the log file is opened go to stderr: append them to it
  if ! redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$pidfile" --logfile "$log" --dir "$STATE_DIR" </dev/null >/dev/null 2>>"$log" 9>&-; then
    log_tail "$log"; die "redis-server failed to start on port $port"
  fi
  deadline=$((SECONDS + SERVICE_TIMEOUT))
  until redis_healthy "$port"; do
    if ((SECONDS >= deadline)); then log_tail "$log"; die "Redis did not answer PING on port $port"; fi
    sleep 0.05
  done
  state_set REDIS_PID "$(cat "$pidfile" 2>/dev/null || true)"
  REDIS_READY_S="$(elapsed "$t0")"
}

stop_redis() {
  local port pid
  port="$(state_get REDIS_PORT)"; pid="$(state_get REDIS_PID)"
  [[ -n "$pid" ]] || pid="$(cat "$STATE_DIR/redis.pid" 2>/dev/null || true)"
  if [[ -n "$port" ]] && pid_is "$pid" redis-server; then
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    local n
    for ((n = 0; n < 40; n++)); do pid_alive "$pid" || break; sleep 0.1; done
  fi
  if pid_is "$pid" redis-server; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [[ -n "$pid" ]]; then say "local-stack: stopped redis (pid $pid)"; fi
  rm -f "$STATE_DIR/redis.pid"
}

# ---------------------------------------------------------------------------------------------------------
# Throwaway CA and the secure Redis shapes (TLS only; a 3-master cluster)

TLS_DIR="$STATE_DIR/tls"

# make_certs: a CA and a server certificate it signed (SAN localhost, 127.0.0.1), and a second CA that
# signed nothing (for the wrong-CA tests). EC P-256 keys: made in milliseconds. Valid for 7 days.
make_certs() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  local log="$STATE_DIR/openssl.log" ext="$TLS_DIR/server.ext"
  rm -rf "$TLS_DIR"; mkdir -p "$TLS_DIR"; : >"$log"
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' >"$ext"
  local ca
  for ca in ca other-ca; do
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
      -subj "/CN=trace-jobs test $ca $(date +%s)" \
      -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
      -keyout "$TLS_DIR/$ca.key" -out "$TLS_DIR/$ca.pem" >>"$log" 2>&1; then
      log_tail "$log"; die "openssl could not make the test CA ($ca)"
    fi
  done
  if ! { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" &&
    openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
      -CAcreateserial -days 7 -extfile "$ext" -out "$TLS_DIR/server.pem"; } >>"$log" 2>&1; then
    log_tail "$log"; die "openssl could not make the server certificate"
  fi
  chmod 600 "$TLS_DIR"/*.key
}

# start_redis_daemon NAME LOG PIDFILE ARGS...: a daemonized redis-server, errors into its log.
start_redis_daemon() {
  local name="$1" log="$2" pidfile="$3"; shift 3
  rm -f "$pidfile"
  # shellcheck disable=SC2094  # errors before the log file is opened go to stderr: append them to it
  if ! redis-server --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --pidfile "$pidfile" \
    --logfile "$log" "$@" </dev/null >/dev/null 2>>"$log" 9>&-; then
    log_tail "$log"; die "redis-server ($name) failed to start"
  fi
}

# wait_until NAME LOG CHECK...: until the CHECK command succeeds (SERVICE_TIMEOUT).
wait_until() {
  local name="$1" log="$2" deadline=$((SECONDS + SERVICE_TIMEOUT)); shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then log_tail "$log"; die "$name did not become ready within ${SERVICE_TIMEOUT}s"; fi
    sleep 0.05
  done
}

redis_tls_healthy() {
  [[ "$(redis-cli --tls --cacert "$TLS_DIR/ca.pem" -h localhost -p "$1" ping 2>/dev/null)" == PONG ]]
}

start_redis_tls() {
  local port="$1" t0 log="$STATE_DIR/redis-tls.log" pidfile="$STATE_DIR/redis-tls.pid"
  t0="$(now)"
  redis-server --version | grep -q 'v=[6-9]' ||
    die "redis-server is older than 6: it cannot speak TLS (Debian's redis-server 7 can)"
  state_set REDIS_TLS_PORT "$port"
  # Also on 127.0.0.2 (a loopback address the certificate does not name: the wrong-host test);
  # '-' = optional, where the OS has no such address.
  start_redis_daemon redis-tls "$log" "$pidfile" --port 0 --tls-port "$port" --dir "$STATE_DIR" \
    --bind 127.0.0.1 -127.0.0.2 \
    --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no
  wait_until "Redis (TLS, port $port)" "$log" redis_tls_healthy "$port"
  state_set REDIS_TLS_PID "$(cat "$pidfile" 2>/dev/null || true)"
  REDIS_TLS_READY_S="$(elapsed "$t0")"
}

cluster_ok() { # cluster_ok PORT...: every node reports cluster_state:ok
  local p
  for p in "$@"; do
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

# start_redis_cluster P1 P2 P3 B1 B2 B3: three masters on ports P, their cluster bus on B (the default,
# port + 10000, may be taken or beyond 65535); redis-cli splits the slots in the background (it waits
# about two seconds for the nodes to agree): finish_redis_cluster waits for it.
start_redis_cluster() {
  local t0 i port dir pids=() ports=("$1" "$2" "$3") buses=("$4" "$5" "$6") log="$STATE_DIR/redis-cluster.log"
  t0="$(now)"
  : >"$log"
  state_set CLUSTER_PORTS "${ports[*]}"
  for i in 0 1 2; do
    port="${ports[$i]}"; dir="$STATE_DIR/cluster-$i"
    rm -rf "$dir"; mkdir -p "$dir"
    start_redis_daemon "cluster node $port" "$dir/redis.log" "$dir/redis.pid" --port "$port" \
      --cluster-enabled yes --cluster-port "${buses[$i]}" --cluster-config-file "$dir/nodes.conf" \
      --cluster-node-timeout 5000 --dir "$dir"
  done
  for i in 0 1 2; do
    port="${ports[$i]}"; dir="$STATE_DIR/cluster-$i"
    wait_until "Redis cluster node $port" "$dir/redis.log" redis_healthy "$port"
    pids+=("$(cat "$dir/redis.pid" 2>/dev/null || true)")
  done
  state_set CLUSTER_PIDS "${pids[*]}"
  timeout "$SERVICE_TIMEOUT" redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" \
    "127.0.0.1:${ports[2]}" --cluster-replicas 0 --cluster-yes >>"$log" 2>&1 </dev/null 9>&- &
  CLUSTER_CREATE_PID=$!
  CLUSTER_T0="$t0"
}

finish_redis_cluster() {
  local log="$STATE_DIR/redis-cluster.log" ports
  ports="$(state_get CLUSTER_PORTS)"
  if ! wait "$CLUSTER_CREATE_PID"; then
    log_tail "$log"; die "redis-cli --cluster create failed (ports $ports)"
  fi
  # shellcheck disable=SC2086  # word splitting of the port list is meant
  wait_until "Redis Cluster (cluster_state:ok on $ports)" "$log" cluster_ok $ports
  CLUSTER_READY_S="$(elapsed "$CLUSTER_T0")"
}

# stop_redis_pid NAME PID: TERM, then KILL after 4 s (the instances keep nothing: no persistence).
stop_redis_pid() {
  local name="$1" pid="$2" n
  pid_is "$pid" redis-server || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((n = 0; n < 40; n++)); do pid_alive "$pid" || break; sleep 0.1; done
  if pid_is "$pid" redis-server; then kill -KILL "$pid" 2>/dev/null || true; fi
  say "local-stack: stopped $name (pid $pid)"
}

stop_secure_redis() {
  local pid i=0
  stop_redis_pid redis-tls "$(state_get REDIS_TLS_PID)"
  for pid in $(state_get CLUSTER_PIDS); do stop_redis_pid "redis cluster node $i" "$pid"; i=$((i + 1)); done
  rm -rf "$STATE_DIR"/cluster-? "$STATE_DIR/redis-tls.pid" "$TLS_DIR"
}

# ---------------------------------------------------------------------------------------------------------
# PostgreSQL

# Directory with initdb + pg_ctl: PATH first, else the highest /usr/lib/postgresql/<v>/bin.
find_pg_bin() {
  local p d
  if p="$(command -v pg_ctl 2>/dev/null)"; then
    d="$(dirname "$(readlink -f "$p")")"
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  fi
  d="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  return 1
}

pg_client() { # pg_client NAME: a client tool next to the server binaries, else on PATH
  local bin; bin="$(state_get PG_BIN)"
  if [[ -n "$bin" && -x "$bin/$1" ]]; then echo "$bin/$1"; else command -v "$1"; fi
}

# PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user (from / so that
# an unreadable cwd such as /root does not matter).
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u postgres -- "$@")
    else
      (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
  else
    "$@"
  fi
}

pg_url_healthy() { "$(pg_client pg_isready)" -q -d "$1" -t 3 >/dev/null 2>&1; }

start_postgres() {
  local port="$1" t0 bin data log deadline locale socket_dir=""
  t0="$(now)"
  if ! bin="$(find_pg_bin)"; then
    apt_install postgresql
    bin="$(find_pg_bin)" || die "PostgreSQL installed but initdb/pg_ctl not found under /usr/lib/postgresql"
  fi
  if is_root && ! id postgres >/dev/null 2>&1; then
    die "running as root and there is no 'postgres' user to run PostgreSQL as (apt-get install -y postgresql creates it)"
  fi
  state_set PG_BIN "$bin"
  state_set PG_PORT "$port"

  # Data dir and log in the state dir when the postgres user can reach it, else in a private /tmp dir.
  data="$STATE_DIR/pgdata"; log="$STATE_DIR/postgres.log"
  rm -rf "$data"; mkdir -p "$data"; chmod 700 "$data"; rm -f "$log"; : >"$log"
  if is_root; then
    chown postgres: "$data" "$log"
    if ! as_pg test -w "$data" || ! as_pg test -w "$log"; then
      rm -rf "$data"
      local tmp; tmp="$(mktemp -d /tmp/trace-stack-pg.XXXXXX)"
      data="$tmp/pgdata"; mkdir -m 700 "$data"; : >"$tmp/postgres.log"
      chown -R postgres: "$tmp"
      ln -sfn "$tmp/postgres.log" "$log"; log="$tmp/postgres.log"
      state_set PG_TMP "$tmp"
      say "local-stack: postgres cannot reach $STATE_DIR; its data lives in $tmp"
    fi
  fi
  state_set PG_DATA "$data"

  locale=C
  if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=C.UTF-8; fi
  if ! as_pg "$bin/initdb" -D "$data" --auth=trust -U postgres --encoding=UTF8 --locale="$locale" --no-sync \
    >>"$log" 2>&1 9>&-; then
    log_tail "$log"; die "initdb failed (data dir $data)"
  fi
  # Unix socket in the data dir when the path fits (sun_path is 108 bytes), else TCP only.
  if ((${#data} + 20 < 108)); then socket_dir="$data"; fi
  cat >>"$data/postgresql.conf" <<EOF

# --- throwaway test cluster (infra/local-stack.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$socket_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_connections = 200
EOF
  # TLS with the throwaway CA's server certificate (plain connections are still accepted).
  if [[ -f "$TLS_DIR/server.pem" ]]; then
    cp "$TLS_DIR/server.pem" "$data/server.crt"; cp "$TLS_DIR/server.key" "$data/server.key"
    chmod 600 "$data/server.key"
    if is_root; then chown postgres: "$data/server.crt" "$data/server.key"; fi
    printf '%s\n' "ssl = on" "ssl_cert_file = 'server.crt'" "ssl_key_file = 'server.key'" >>"$data/postgresql.conf"
  fi
  # shellcheck disable=SC2094  # pg_ctl's own messages go to the server log too
  if ! as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t "$SERVICE_TIMEOUT" start >/dev/null 2>>"$log" 9>&-; then
    log_tail "$log"; die "PostgreSQL failed to start on port $port (data dir $data)"
  fi
  state_set PG_PID "$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
  local url_admin="postgres://postgres@127.0.0.1:$port/postgres"
  deadline=$((SECONDS + SERVICE_TIMEOUT))
  until pg_url_healthy "$url_admin"; do
    if ((SECONDS >= deadline)); then log_tail "$log"; die "PostgreSQL not ready on port $port"; fi
    sleep 0.1
  done
  if ! "$(pg_client psql)" -X -q -d "$url_admin" -c 'CREATE DATABASE trace' >>"$log" 2>&1; then
    log_tail "$log"; die "could not create database trace on port $port"
  fi
  PG_VERSION_STR="$("$bin/postgres" --version 2>/dev/null | sed 's/^postgres (PostgreSQL) //')"
  PG_READY_S="$(elapsed "$t0")"
}

stop_postgres() {
  local bin data pid tmp
  bin="$(state_get PG_BIN)"; data="$(state_get PG_DATA)"; pid="$(state_get PG_PID)"; tmp="$(state_get PG_TMP)"
  if [[ -n "$data" && -f "$data/postmaster.pid" && -n "$bin" ]]; then
    as_pg "$bin/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if pid_is "$pid" postgres; then kill -QUIT "$pid" 2>/dev/null || true; sleep 0.5; fi
  if pid_is "$pid" postgres; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [[ -n "$pid" ]]; then say "local-stack: stopped postgres (pid $pid)"; fi
  if [[ -n "$data" ]]; then rm -rf "$data"; fi
  if [[ -n "$tmp" ]]; then
    # keep the log next to the others
    if [[ -L "$STATE_DIR/postgres.log" ]]; then cp --remove-destination "$tmp/postgres.log" "$STATE_DIR/postgres.log" 2>/dev/null || true; fi
    rm -rf "$tmp"
  fi
  rm -rf "$STATE_DIR/pgdata"
}

# DATABASE_URL from the caller, unless it is a dead URL of an earlier run of this script (a shell that
# did `eval "$(local-stack.sh env)"` keeps it after `down`).
external_database_url() {
  local url="${DATABASE_URL:-}"
  [[ -n "$url" ]] || return 1
  if [[ "$url" =~ ^postgres://postgres@127\.0\.0\.1:[0-9]+/trace$ ]] && ! pg_url_healthy "$url"; then
    say "local-stack: ignoring DATABASE_URL=$url (a stopped instance of an earlier run); starting a private PostgreSQL"
    return 1
  fi
  if ! pg_url_healthy "$url"; then
    say "local-stack: warning: DATABASE_URL from the environment does not answer (using it anyway: unset it to get a private PostgreSQL)"
  fi
  echo "$url"
}

# ---------------------------------------------------------------------------------------------------------
# whole stack

# service_lines: one status line per service on stdout; returns 0 when all are healthy.
service_lines() {
  local ok=0 kind port pid url
  kind="$(state_get EMU_KIND)"; port="$(state_get EMU_PORT)"; pid="$(state_get EMU_PID)"
  if [[ -n "$kind" ]] && pid_is "$pid" "$kind" && emulator_healthy "$kind" "$port"; then
    echo "aws-emulator  running  $kind  http://127.0.0.1:$port  pid $pid  rss $(rss_mb "$pid")"
  else
    echo "aws-emulator  DOWN     ${kind:-}${port:+  port $port}"; ok=1
  fi
  port="$(state_get REDIS_PORT)"; pid="$(state_get REDIS_PID)"
  if [[ -n "$port" ]] && pid_is "$pid" redis-server && redis_healthy "$port"; then
    echo "redis         running  redis://127.0.0.1:$port/0  pid $pid  rss $(rss_mb "$pid")"
  else
    echo "redis         DOWN${port:+     port $port}"; ok=1
  fi
  port="$(state_get REDIS_TLS_PORT)"; pid="$(state_get REDIS_TLS_PID)"
  if [[ -n "$port" ]] && pid_is "$pid" redis-server && redis_tls_healthy "$port"; then
    echo "redis-tls     running  rediss://localhost:$port  pid $pid  rss $(rss_mb "$pid")"
  else
    echo "redis-tls     DOWN${port:+     port $port}"; ok=1
  fi
  local ports pids p alive=1
  ports="$(state_get CLUSTER_PORTS)"; pids="$(state_get CLUSTER_PIDS)"
  for p in $pids; do pid_is "$p" redis-server || alive=0; done
  # shellcheck disable=SC2086  # word splitting of the port list is meant
  if [[ -n "$ports" && -n "$pids" ]] && ((alive)) && cluster_ok $ports; then
    echo "redis-cluster running  3 masters on 127.0.0.1 ports ${ports// /, }  pids $pids"
  else
    echo "redis-cluster DOWN${ports:+     ports $ports}"; ok=1
  fi
  url="$(state_get PG_EXTERNAL_URL)"
  if [[ -n "$url" ]]; then
    if pg_url_healthy "$url"; then echo "postgres      running  external DATABASE_URL (not managed here)"
    else echo "postgres      DOWN     external DATABASE_URL does not answer"; ok=1; fi
  else
    port="$(state_get PG_PORT)"; pid="$(state_get PG_PID)"
    if [[ -n "$port" ]] && pid_is "$pid" postgres &&
      pg_url_healthy "postgres://postgres@127.0.0.1:$port/trace"; then
      echo "postgres      running  postgres://postgres@127.0.0.1:$port/trace  pid $pid"
    else
      echo "postgres      DOWN${port:+     port $port}"; ok=1
    fi
  fi
  [[ -f "$ENV_FILE" ]] || ok=1
  return $ok
}

stack_up() { [[ -f "$ENV_FILE" && -f "$STATE_FILE" ]] && service_lines >/dev/null; }

stop_all() {
  stop_emulator
  stop_redis
  stop_secure_redis
  stop_postgres
  rm -f "$ENV_FILE" "$STATE_FILE"
}

lock_state() {
  mkdir -p "$STATE_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE_DIR/.lock"
    flock -w 300 9 || die "another $PROG is running on $STATE_DIR"
  fi
}

cmd_up() {
  local t0; t0="$(now)"
  lock_state
  if stack_up; then
    local running; running="$(state_get EMU_KIND)"
    if [[ "${TRACE_EMULATOR:-auto}" == auto || "${TRACE_EMULATOR:-auto}" == "$running" ]]; then
      say "local-stack: already up ($(short "$STATE_DIR"))"
      service_lines | sed 's/^/  /' >&2 || true
      say "  use: eval \"\$($PROG env)\""
      return 0
    fi
    say "local-stack: running emulator is $running but TRACE_EMULATOR=$TRACE_EMULATOR: restarting"
  fi
  if [[ -f "$STATE_FILE" || -f "$ENV_FILE" ]]; then
    say "local-stack: cleaning up a stale or partial stack first"
    stop_all 2>/dev/null || true
  fi

  # From here on, a failure stops whatever was already started.
  trap 'status=$?; if ((status != 0)); then say "local-stack: up failed; stopping what was started"; stop_all >/dev/null 2>&1 || true; fi' EXIT
  : >"$STATE_FILE"

  local emu_port redis_port pg_port tls_port c1 c2 c3 b1 b2 b3 db_url db_tls_url=""
  read -r emu_port redis_port pg_port tls_port c1 c2 c3 b1 b2 b3 <<<"$(free_ports 10)" || true
  [[ -n "${b3:-}" ]] || die "could not find free loopback ports"
  make_certs
  start_emulator "$emu_port"
  start_redis "$redis_port"
  start_redis_tls "$tls_port"
  # The cluster's slot assignment (about 2 s) runs in the background while PostgreSQL starts.
  start_redis_cluster "$c1" "$c2" "$c3" "$b1" "$b2" "$b3"
  if db_url="$(external_database_url)"; then
    state_set PG_EXTERNAL_URL "$db_url"
    PG_READY_S=""
  else
    start_postgres "$pg_port"
    db_url="postgres://postgres@127.0.0.1:$pg_port/trace"
    db_tls_url="postgres://postgres@localhost:$pg_port/trace?sslmode=verify-full"
  fi
  finish_redis_cluster

  local tmp="$ENV_FILE.tmp.$$"
  cat >"$tmp" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$emu_port
AWS_REGION=$AWS_REGION_DEFAULT
AWS_DEFAULT_REGION=$AWS_REGION_DEFAULT
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
TRACE_EMULATOR=$EMU_KIND
REDIS_URL=redis://127.0.0.1:$redis_port/0
DATABASE_URL=$db_url
TRACE_TEST_REDIS_TLS_URL=rediss://localhost:$tls_port
TRACE_TEST_REDIS_TLS_WRONG_HOST_URL=rediss://127.0.0.2:$tls_port
TRACE_TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:$c1
TRACE_TEST_CA_FILE=$TLS_DIR/ca.pem
TRACE_TEST_OTHER_CA_FILE=$TLS_DIR/other-ca.pem
EOF
  if [[ -n "$db_tls_url" ]]; then echo "TRACE_TEST_DATABASE_TLS_URL=$db_tls_url" >>"$tmp"; fi
  mv -f "$tmp" "$ENV_FILE"
  trap - EXIT

  say "local-stack: up in $(elapsed "$t0") s (state: $(short "$STATE_DIR"))"
  if [[ "$EMU_KIND" == localstack ]]; then
    say "  aws emulator  LocalStack $LOCALSTACK_VERSION ($("$EMU_PYTHON" -V 2>&1)) at http://127.0.0.1:$emu_port, healthy after ${EMU_READY_S} s, log $(short "$STATE_DIR/localstack.log")"
  else
    say "  aws emulator  moto at http://127.0.0.1:$emu_port, healthy after ${EMU_READY_S} s, log $(short "$STATE_DIR/moto.log")"
  fi
  say "  redis         redis://127.0.0.1:$redis_port/0 (ready after ${REDIS_READY_S} s)"
  say "  redis-tls     rediss://localhost:$tls_port (TLS only, CA $(short "$TLS_DIR/ca.pem"); ready after ${REDIS_TLS_READY_S} s)"
  say "  redis-cluster redis://127.0.0.1:$c1 (3 masters: ports $c1, $c2, $c3; cluster_state:ok after ${CLUSTER_READY_S} s)"
  if [[ -n "$PG_READY_S" ]]; then
    say "  postgres      $db_url (PostgreSQL ${PG_VERSION_STR:-?}, ssl=on, ready after ${PG_READY_S} s)"
  else
    say "  postgres      using DATABASE_URL from the environment (none started)"
  fi
  say "  use: eval \"\$($PROG env)\"   stop: $PROG down"
}

cmd_env() {
  if ! stack_up; then
    say "local-stack: the stack is not up (state: $STATE_DIR); run: $PROG up"
    exit 1
  fi
  sed -e '/^[A-Z_][A-Z0-9_]*=/!d' -e 's/^/export /' "$ENV_FILE"
}

cmd_status() {
  if [[ ! -f "$STATE_FILE" ]]; then
    echo "local-stack: down (no stack in $STATE_DIR)"
    exit 3
  fi
  if service_lines; then exit 0; else exit 3; fi
}

cmd_down() {
  if [[ ! -d "$STATE_DIR" ]]; then say "local-stack: nothing to stop"; return 0; fi
  lock_state
  if [[ ! -f "$STATE_FILE" && ! -f "$ENV_FILE" ]]; then
    # Still remove leftovers of an interrupted run.
    rm -rf "$STATE_DIR/pgdata" "$STATE_DIR/localstack"
    say "local-stack: nothing to stop"; return 0
  fi
  stop_all || true
  say "local-stack: down"
}

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down || true ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *) say "usage: $PROG up|down|env|status"; exit 2 ;;
  esac
}

main "$@"
