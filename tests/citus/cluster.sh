# A throwaway Citus cluster on this machine, for the Citus tier and benchmark: a coordinator
# and two workers on loopback, owned by the postgres user like the other test clusters,
# with Citus and pg_billing installed in the system PostgreSQL 15. Sourced after
# scripts/env.sh:
#   citus_installed                      whether Citus 13.2 is in the server's extensions
#   start_citus_cluster DIR PORT [SETTINGS]   coordinator on PORT, workers on PORT+1, PORT+2;
#                                        exports PGHOST/PGPORT for the coordinator
#   stop_citus_cluster DIR

citus_installed() {
  [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] &&
    grep -q "default_version = '13.2" "$("$PG_CONFIG" --sharedir)/extension/citus.control" 2>/dev/null
}

start_citus_cluster() {
  local dir=$1 port=$2 settings=${3:--c fsync=off} node
  stop_citus_cluster "$dir"
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres:postgres "$dir"
  for node in 0 1 2; do
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/node$node" -A trust -U postgres --no-sync >/dev/null
    echo "-p $((port + node)) -k /tmp -c listen_addresses=127.0.0.1 -c shared_preload_libraries=citus \
-c max_prepared_transactions=100 -c citus.max_cached_conns_per_worker=16 $settings" >"$dir/node$node.options"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/node$node" -l "$dir/node$node.log" -w start \
      -o "$(cat "$dir/node$node.options")" >/dev/null
    psql -X -q -h /tmp -p $((port + node)) -U postgres -d postgres -c "CREATE EXTENSION citus" >/dev/null
  done
  psql -X -q -h /tmp -p "$port" -U postgres -d postgres >/dev/null <<SQL
SELECT citus_set_coordinator_host('127.0.0.1', $port);
SELECT citus_add_node('127.0.0.1', $((port + 1)));
SELECT citus_add_node('127.0.0.1', $((port + 2)));
SQL
  export PGHOST=/tmp PGPORT=$port PGUSER=postgres
  trap "stop_citus_cluster '$dir'" EXIT
}

stop_citus_cluster() {
  local dir=$1 node
  for node in 0 1 2; do
    if [ -f "$dir/node$node/postmaster.pid" ]; then
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/node$node" -m fast -w stop >/dev/null 2>&1 || true
    fi
  done
}
