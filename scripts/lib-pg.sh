# Shell helpers to run a private, throwaway PostgreSQL cluster.
# Sourced by scripts/test and scripts/bench; not a command of its own.
#
#   pg_start_throwaway [extra postgres -c settings...]
#     Sets PG_TMP (the cluster's directory) and PG_URL (a libpq connection
#     string over the Unix socket in PG_TMP). Runs the server as the current
#     user, or as the unprivileged 'postgres' user when invoked as root.
#   pg_stop_throwaway
#     Stops the server and deletes PG_TMP. Safe to call more than once.

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb ]] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
  echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  return 1
}

# Runs a command as the cluster's owner.
pg_as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$PG_OWNER" -- "$@"
  else
    "$@"
  fi
}

pg_start_throwaway() {
  local bindir
  bindir=$(pg_bindir) || return 1
  PG_OWNER=$(id -un)
  if [[ $(id -u) -eq 0 ]]; then
    PG_OWNER=postgres
    id -u "$PG_OWNER" >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OWNER"
  fi
  PG_TMP=$(mktemp -d /tmp/cqrs-pg.XXXXXX)
  chmod 755 "$PG_TMP"
  [[ $(id -u) -eq 0 ]] && chown "$PG_OWNER" "$PG_TMP"
  PG_PORT=5432
  pg_as_owner "$bindir/initdb" -D "$PG_TMP/data" -A trust -U postgres \
    -E UTF8 --locale=C.UTF-8 >"$PG_TMP/initdb.log" 2>&1 || {
    cat "$PG_TMP/initdb.log" >&2
    return 1
  }
  local opts="-c listen_addresses= -c unix_socket_directories=$PG_TMP -p $PG_PORT"
  opts+=" -c max_connections=200 -c shared_buffers=256MB"
  local s
  for s in "$@"; do opts+=" -c $s"; done
  # For scripts/pg-node start (pg_ctl restart reuses them by itself).
  echo "$opts" >"$PG_TMP/postgres.opts"
  pg_as_owner "$bindir/pg_ctl" -D "$PG_TMP/data" -o "$opts" \
    -l "$PG_TMP/server.log" -w -t 60 start >/dev/null || {
    cat "$PG_TMP/server.log" >&2
    return 1
  }
  PG_BINDIR=$bindir
  PG_URL="host=$PG_TMP port=$PG_PORT user=postgres dbname=postgres"
  export PG_URL PG_TMP PG_BINDIR
}

pg_stop_throwaway() {
  [[ -n ${PG_TMP:-} && -d $PG_TMP ]] || return 0
  if [[ -f $PG_TMP/data/postmaster.pid ]]; then
    pg_as_owner "$PG_BINDIR/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_TMP"
  PG_TMP=
}
