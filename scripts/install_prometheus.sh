#!/usr/bin/env bash
# Install Debian's prometheus (prometheus + promtool) for the rule tests and `ebbflow up --prometheus`.
# Idempotent: does nothing when both are on PATH. The Debian service it ships is never started: ebbflow runs its
# own instance with its own data directory. Without apt-get or root it says what to do and fails, since the rule
# tests need promtool.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        echo "error: prometheus/promtool are missing and this user cannot apt-get install them; install Debian's prometheus (2.42+)" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get here; install prometheus and promtool (2.42+) and put them on PATH" >&2
    exit 1
fi
echo "installing prometheus (Debian) for promtool and ebbflow up --prometheus"
# policy-rc.d 101 keeps the package's post-install from starting the Debian service.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && created_policy=1
fi
status=0
{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null || status=$?
if [ "$created_policy" -eq 1 ]; then $sudo rm -f "$policy"; fi
if [ "$status" -ne 0 ]; then
    echo "error: apt-get install prometheus failed ($status)" >&2
    exit "$status"
fi
