#!/usr/bin/env bash
# The tests, with everything they need. It installs Node.js, PostgreSQL and
# Chromium (from Debian, when run as root and missing) and the npm packages
# of the third-party Oblivious HTTP client that internal/localbackend's tests
# drive the gateway with, starts a throwaway PostgreSQL cluster for the tests
# of the PostgreSQL store (stopped and deleted on exit), then runs go test on
# every package. Arguments go to go test; package arguments
# (./internal/store/...) replace ./... With "--" first, the rest is a
# command to run in that environment instead (.ci/run's go test).
# Plain `go test ./...` runs the same tests but skips the third-party
# client when its packages are missing, the PostgreSQL tests, and the
# browser tests (portal, transparency page) when chromium is missing.
#
# With CONFTRACE_TEST_POSTGRES already set to a postgres:// URL of a server
# whose user may create schemas, the tests use that server instead.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "scripts/test.sh: the tests need $* (Debian: apt-get install $*)" >&2
    exit 1
  fi
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
# Versions and checksums are pinned by package-lock.json.
npm ci --prefix internal/localbackend/testdata/ohttp-js --no-audit --no-fund --loglevel=error

# The browser tests of the health-authority portal (internal/portal) and of
# the transparency page (internal/transparency) drive Debian's chromium,
# headless, through the DevTools protocol.
if ! command -v chromium >/dev/null; then
  apt_install chromium
fi

# pg_bin prints the directory of PostgreSQL's server programs: on the PATH,
# or Debian's newest /usr/lib/postgresql/<version>/bin.
pg_bin() {
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"
    return
  fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

# start_postgres initdb's a cluster in a temporary directory, starts it
# listening on a socket in that directory only (no TCP port), with trust
# authentication for its one user, and sets pg_dir and pg_as for
# stop_postgres. PostgreSQL refuses to run as root, so as root it runs as
# nobody.
pg_dir=
pg_as=()
start_postgres() {
  local bin
  bin=$(pg_bin) || true
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(pg_bin) || { echo "scripts/test.sh: PostgreSQL installed, but no initdb found" >&2; exit 1; }
  fi
  # In /tmp, not $TMPDIR: nobody must reach it, and a socket's path must
  # stay short.
  pg_dir=$(mktemp -d /tmp/conftrace-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    chown nobody "$pg_dir"
    pg_as=(runuser -u nobody --)
  fi
  trap stop_postgres EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # --no-sync: a throwaway cluster's files need not survive a crash. The
  # server itself runs with fsync on, which the store checks.
  "${pg_as[@]}" "$bin/initdb" -D "$pg_dir/data" -U conftrace --auth=trust --no-sync -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 ||
    { cat "$pg_dir/initdb.log" >&2; exit 1; }
  "${pg_as[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses= -c unix_socket_directories=$pg_dir -c max_connections=200" start >/dev/null ||
    { cat "$pg_dir/server.log" >&2; exit 1; }
  pg_stop=("${pg_as[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop)
  export CONFTRACE_TEST_POSTGRES="postgres://conftrace@/postgres?host=$pg_dir&sslmode=disable"
}

pg_stop=()
stop_postgres() {
  if [ ${#pg_stop[@]} -gt 0 ]; then
    "${pg_stop[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_dir"
}

if [ -z "${CONFTRACE_TEST_POSTGRES:-}" ]; then
  start_postgres
fi
export CONFTRACE_REQUIRE_NODE=1 CONFTRACE_REQUIRE_POSTGRES=1 CONFTRACE_REQUIRE_CHROMIUM=1

# "-- COMMAND ARGS..." runs that command in this environment instead:
# .ci/run gives its go test command so. Not exec: the trap stops the
# cluster when the command is done.
if [ "${1:-}" = -- ]; then
  shift
  "$@"
  exit
fi
# Packages given as ./path or ../path are tested instead of ./...
pkgs=(./...)
for arg in "$@"; do
  case $arg in
    ./* | ../* | .) pkgs=() ;;
  esac
done
go test "$@" "${pkgs[@]}"
