#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, for the results database's tests.
#
#   eval "$(scripts/pg_cluster.sh start)"   # exports FACEMTL_TEST_PG_URL and FACEMTL_PG_DIR
#   scripts/pg_cluster.sh stop "$FACEMTL_PG_DIR"
#
# Uses Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin, or PG_BIN); as root it runs the
# server as the postgres user (PostgreSQL refuses to run as root). Trust authentication on
# 127.0.0.1 only, fsync off: test data, nothing else.
set -euo pipefail
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
start)
    [ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL at $PG_BIN" >&2; exit 1; }
    dir=$(mktemp -d /tmp/facemtl-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o \
        "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null
    echo "export FACEMTL_PG_DIR=$dir FACEMTL_TEST_PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=${2:?usage: pg_cluster.sh stop DIR}
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: pg_cluster.sh start | stop DIR" >&2
    exit 2
    ;;
esac
