#!/usr/bin/env bash
# The tests, with everything they need. It installs Node.js (from Debian,
# when run as root and missing) and the npm packages of the third-party
# Oblivious HTTP client that internal/localbackend's tests drive the
# gateway with, then runs go test on every package; arguments go to go test
# (.ci/run passes -race -shuffle=on). Plain `go test ./...` runs the same
# tests but skips the third-party client when its packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "scripts/test.sh: the tests need Node.js and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
fi
# Versions and checksums are pinned by package-lock.json.
npm ci --prefix internal/localbackend/testdata/ohttp-js --no-audit --no-fund --loglevel=error

export CONFTRACE_REQUIRE_NODE=1
exec go test "$@" ./...
