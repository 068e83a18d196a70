#!/usr/bin/env bash
# Debian packages some tests need, installed when missing: Chromium for tests/web/ (Playwright's
# own browser download cannot work offline) and docker-compose to validate docker-compose.yml
# (tests/test_deploy.py; no Docker engine needed). Without apt-get or root, those tests skip
# (outside CI) and this says so.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "not installing ${missing[*]} (needs apt-get as root): the tests that use them will skip" >&2
fi
