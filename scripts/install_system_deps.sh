#!/usr/bin/env bash
# Debian packages and services some tests need, installed or started when missing:
# - Chromium for tests/web/ (Playwright's own browser download cannot work offline);
# - docker-compose to validate docker-compose.yml (tests/test_deploy.py; no Docker engine needed);
# - PostgreSQL for the job store's tests (tests/databases.py): a server on 127.0.0.1:5432 that
#   trusts loopback connections, with a database named `test` (as on the CI machine).
# Without apt-get or root this says what it could not do; the tests that need it then skip
# (Chromium, docker-compose, outside CI) or fail naming this script (PostgreSQL).
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)

postgres_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! postgres_up && ! command -v pg_ctlcluster >/dev/null; then
    missing+=(postgresql)
fi

can_root=false
command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ] && can_root=true

if [ ${#missing[@]} -gt 0 ]; then
    if $can_root; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "not installing ${missing[*]} (needs apt-get as root): the tests that use them will skip or fail" >&2
    fi
fi

# PostgreSQL: installed above or earlier, but maybe not running (a fresh container starts no
# services; Debian's package may not create or start its cluster there).
if ! postgres_up && command -v pg_ctlcluster >/dev/null; then
    if ! $can_root; then
        echo "PostgreSQL is installed but not running on 127.0.0.1:5432; start it as root" >&2
        exit 0
    fi
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    if ! pg_lsclusters -h | grep -q .; then
        pg_createcluster "$version" main >/dev/null
    fi
    read -r version cluster _ < <(pg_lsclusters -h | head -1)
    hba=/etc/postgresql/$version/$cluster/pg_hba.conf
    # Trust loopback: a test-only server that nothing but this machine can reach.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+\s*$/\1trust/' "$hba"
    pg_ctlcluster "$version" "$cluster" start
    for _ in $(seq 50); do postgres_up && break; sleep 0.2; done
fi
if postgres_up && $can_root && command -v psql >/dev/null; then
    if ! su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1; then
        su postgres -c "createdb test"
    fi
fi
