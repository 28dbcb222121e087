#!/usr/bin/env bash
# Makes sure the real servers opsbot runs against locally are installed (Debian packages
# prometheus, prometheus-alertmanager and, with `postgres`, postgresql), installing them when
# missing and we are root. With `postgres` it also starts the cluster, makes an `opsbot`
# role and database, and prints their SQLAlchemy URL on stdout.
#   usage: scripts/servers.sh [postgres]
set -euo pipefail

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
if [ "${1:-}" = postgres ]; then command -v pg_ctlcluster >/dev/null || need+=(postgresql); fi
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (Debian packages)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  else
    echo "missing ${need[*]}: apt-get install --no-install-recommends ${need[*]} (as root)" >&2
  fi
fi

if [ "${1:-}" = postgres ] && command -v pg_lsclusters >/dev/null; then
  read -r ver name _ < <(pg_lsclusters --no-header | head -n1) || true
  if [ -n "${ver:-}" ]; then
    if ! pg_lsclusters --no-header | head -n1 | grep -q online; then
      pg_ctlcluster "$ver" "$name" start >&2
    fi
    port=$(pg_lsclusters --no-header | head -n1 | awk '{print $3}')
    su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname='opsbot'\"" | grep -q 1 \
      || su postgres -c "psql -q -p $port -c \"CREATE ROLE opsbot LOGIN CREATEDB PASSWORD 'opsbot'\"" >&2
    su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname='opsbot'\"" | grep -q 1 \
      || su postgres -c "createdb -p $port -O opsbot opsbot" >&2
    echo "postgresql+asyncpg://opsbot:opsbot@127.0.0.1:$port/opsbot"
  fi
fi
