#!/usr/bin/env bash
# Best effort: install Debian's haproxy for the router's front (router.front: auto uses it when present).
# Without it everything still works through the Python router alone, and the front's tests are skipped.
set -uo pipefail
if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        echo "note: haproxy is not installed and this user cannot apt-get install it; the router runs without its HAProxy front" >&2
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get here; install haproxy (2.6+) to give the router its HAProxy front" >&2
    exit 0
fi
echo "installing haproxy (Debian) for the router's front"
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends haproxy; } >/dev/null; then
    echo "note: installing haproxy failed; the router runs without its HAProxy front" >&2
fi
exit 0
