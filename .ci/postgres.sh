# A throw-away PostgreSQL server for the test run; sourced by .ci/run.
#
#   source .ci/postgres.sh
#   ci_postgres_start   # installs PostgreSQL when missing, starts a server on 127.0.0.1,
#                       # creates a database, exports FERHPO_TEST_POSTGRES (its URL) and
#                       # FERHPO_TEST_POSTGRES_CTL (a script that stops / starts it)
#   ci_postgres_stop    # stops the server and removes its folder (safe to call twice)
#
# The server's data, socket and log live in one temp dir ($CI_POSTGRES_DIR), owned by
# the `postgres` system user when run as root (PostgreSQL refuses to run as root).
# It never touches a cluster the system's own packages may have set up on port 5432.

CI_POSTGRES_DIR="${CI_POSTGRES_DIR:-}"

_ci_pg_bin() {
    # The newest installed server's binaries, or nothing.
    local ctl
    ctl="$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$ctl" ]; then dirname "$ctl"; fi
}

_ci_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ci_postgres_start() {
    if [ -z "$(_ci_pg_bin)" ]; then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "ci: no PostgreSQL server (/usr/lib/postgresql/*/bin/pg_ctl) and no apt-get to install it" >&2
            return 1
        fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local bin port db
    bin="$(_ci_pg_bin)"
    port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    db="ferhpo_test"
    CI_POSTGRES_DIR="$(mktemp -d -t ferhpo-postgres.XXXXXX)"
    export CI_POSTGRES_DIR
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$CI_POSTGRES_DIR"
    fi
    _ci_pg_as_owner "$bin/initdb" -D "$CI_POSTGRES_DIR/data" -A trust -U postgres -E UTF8 --no-locale >/dev/null
    # Durability is pointless for a server that lives for one test run.
    # `ctl stop` / `ctl start`: the outage tests (tests/test_outage.py) stop the server
    # (a fast shutdown, as a restart or a crash looks to its clients) and start it again.
    local owner=""
    if [ "$(id -u)" = 0 ]; then owner="runuser -u postgres --"; fi
    {
        echo '#!/usr/bin/env bash'
        echo 'set -euo pipefail'
        echo 'case "${1:-}" in'
        echo "    stop) $owner '$bin/pg_ctl' stop -w -m fast -D '$CI_POSTGRES_DIR/data' >/dev/null ;;"
        echo "    start) $owner '$bin/pg_ctl' start -w -t 60 -D '$CI_POSTGRES_DIR/data' -l '$CI_POSTGRES_DIR/server.log' -o '-c listen_addresses=127.0.0.1 -p $port -k $CI_POSTGRES_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off' >/dev/null ;;"
        echo '    *) echo "usage: $0 stop|start" >&2; exit 2 ;;'
        echo 'esac'
    } > "$CI_POSTGRES_DIR/ctl"
    chmod 755 "$CI_POSTGRES_DIR/ctl"
    "$CI_POSTGRES_DIR/ctl" start || { cat "$CI_POSTGRES_DIR/server.log" >&2; return 1; }
    _ci_pg_as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
    export FERHPO_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/$db"
    export FERHPO_TEST_POSTGRES_CTL="$CI_POSTGRES_DIR/ctl"
    echo "ci: PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') at $FERHPO_TEST_POSTGRES"
}

ci_postgres_stop() {
    local dir="$CI_POSTGRES_DIR" bin
    [ -n "$dir" ] || return 0
    bin="$(_ci_pg_bin)"
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        _ci_pg_as_owner "$bin/pg_ctl" stop -w -m fast -D "$dir/data" >/dev/null || true
    fi
    rm -rf "$dir"
    CI_POSTGRES_DIR=""
}
