# Sourced by the project's scripts: toolchain paths, idempotent prerequisites, and a
# throwaway PostgreSQL cluster owned by the postgres user.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
export PG_CONFIG=$PG_BIN/pg_config
export PGRX_HOME=$ROOT/target/pgrx-home
PGRX_VERSION=0.18.1
APT_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron libclang-dev clang sudo)

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_prerequisites() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  mkdir -p "$PGRX_HOME"
  cp "$ROOT/pgrx.toml" "$PGRX_HOME/config.toml"
}

# Builds and installs the extension into the system PostgreSQL ($1: --release or nothing):
# the current version's script (generated), the upgrade scripts and the frozen install
# scripts of earlier releases (sql/pg_billing--<version>.sql), so that any release can be
# installed and upgraded.
install_extension() {
  log "building and installing pg_billing ${1:-(debug)}"
  (cd "$ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" ${1:-} >/dev/null)
  local script
  for script in "$ROOT"/sql/pg_billing--*.sql; do
    if [[ "$(basename "$script")" =~ ^pg_billing--[0-9]+\.[0-9]+\.[0-9]+\.sql$ ]]; then
      as_root install -m 644 "$script" "$("$PG_CONFIG" --sharedir)/extension/"
    fi
  done
}

# start_cluster DIR PORT [SETTINGS]: a fresh cluster in DIR (owned by postgres) listening
# on PORT with pg_cron preloaded; stopped again when the calling script exits. SETTINGS
# are extra server options (default: fsync off, for tests).
start_cluster() {
  local dir=$1 port=$2 settings=${3:--c fsync=off}
  stop_cluster "$dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  chown postgres:postgres "$dir"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
  echo "-p $port -k /tmp -c listen_addresses='' -c shared_preload_libraries=pg_cron -c cron.database_name=postgres -c cron.host=/tmp $settings" \
    > "$dir/options"
  run_server "$dir"
  export PGHOST=/tmp PGPORT=$port PGUSER=postgres PG_CLUSTER_DIR=$dir
  trap "stop_cluster '$dir'" EXIT
}

# run_server DIR: starts the cluster in DIR with the options it was created with.
run_server() {
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w start -o "$(cat "$1/options")" >/dev/null
}

# crash_server DIR: kill -9 of the cluster's postmaster and every backend at once, as a
# power cut would (a backend left alive finishes its work before it notices its postmaster
# gone), then a restart, which replays the WAL.
crash_server() {
  local dir=$1 postmaster
  postmaster=$(head -1 "$dir/data/postmaster.pid")
  kill -9 "$postmaster" $(pgrep -P "$postmaster") 2>/dev/null || true
  local _
  for _ in $(seq 1 100); do
    [ "$(pgrep -c -P "$postmaster" 2>/dev/null || true)" = 0 ] && break
    sleep 0.1
  done
  # A killed postmaster nobody reaps stays a zombie, which is dead but still blocks a
  # restart through its postmaster.pid.
  if [ "$(ps -o stat= -p "$postmaster" 2>/dev/null | cut -c1)" = Z ]; then
    rm -f "$dir/data/postmaster.pid"
    [ "$(head -1 "/tmp/.s.PGSQL.$PGPORT.lock" 2>/dev/null)" = "$postmaster" ] && rm -f "/tmp/.s.PGSQL.$PGPORT.lock"
  fi
  run_server "$dir"
}

stop_cluster() {
  local dir=$1
  if [ -f "$dir/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
