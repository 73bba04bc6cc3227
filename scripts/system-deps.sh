#!/usr/bin/env bash
# Installs the Debian packages and starts the services the test suite needs.
# Safe to run repeatedly: it only acts on what is missing.
set -euo pipefail

need=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing Debian packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) for the postgres store tests.
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "system-deps: PostgreSQL did not start" >&2; exit 1; }
  fi
fi
# The store tests run on SQLite *and* PostgreSQL: never let CI skip the second one quietly.
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "system-deps: PostgreSQL is not listening on 127.0.0.1:5432 and could not be started" >&2
  exit 1
fi
