#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler from Debian's source package `kubernetes`
# (1.20.2 in bookworm), for the tests that run against a real Kubernetes API server (docs/architecture.md,
# "Kubernetes test cluster"). No registry ships these binaries; Debian's source builds with Debian's Go.
#
# The result is cached outside the clone, in ${EBBFLOW_CACHE:-~/.cache/ebbflow}/kubernetes-1.20.2/bin, so a machine
# builds once (about 8-12 minutes on 2 cores) and every clone and CI run reuses it. Idempotent: with the binaries
# present it only makes sure etcd is installed. A lock serialises concurrent runs; the second waits and then finds
# the binaries. The source tree and Go caches (about 2.3 GB) are removed after a successful build.
set -euo pipefail

version=1.20.2
cache_root="${EBBFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ebbflow}"
dest="$cache_root/kubernetes-$version"
bin="$dest/bin"
components=(kube-apiserver kube-controller-manager kube-scheduler)

have_binaries() {
    local c
    for c in "${components[@]}"; do [ -x "$bin/$c" ] || return 1; done
    [ -f "$bin/.complete" ]
}

# etcd for the tests' control plane, openssl for its ServiceAccount signing key.
have_tools() { command -v etcd >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; }

if have_binaries && have_tools; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        echo "error: building Kubernetes needs apt-get (golang-go rsync etcd-server and the kubernetes source);" \
            "this user cannot run it. Install those packages, or run: sudo $0" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get here; the Kubernetes test cluster is built from Debian's source package" >&2
    exit 1
fi

mkdir -p "$dest"
exec 9>"$dest/.lock"
if ! flock -n 9; then
    echo "another build of Kubernetes $version holds $dest/.lock; waiting for it"
    flock 9
fi

apt_install() {
    # policy-rc.d 101 keeps etcd-server's post-install from starting the Debian service: the tests run their own
    # etcd with its own data directory.
    local policy=/usr/sbin/policy-rc.d created=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && created=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
    if [ "$created" -eq 1 ]; then $sudo rm -f "$policy"; fi
    return "$status"
}

if have_binaries; then
    if ! have_tools; then
        echo "installing etcd-server and openssl (Debian) for the Kubernetes test cluster"
        $sudo apt-get update -qq
        apt_install etcd-server openssl
    fi
    exit 0
fi

started=$(date +%s)
echo "building Kubernetes $version (apiserver, controller-manager, scheduler) from Debian's source into $bin"
echo "this takes about 8-12 minutes on 2 cores, once per machine"

srclist=/etc/apt/sources.list.d/ebbflow-bookworm-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src .*bookworm' /etc/apt/sources.list; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        | $sudo tee "$srclist" >/dev/null
fi
$sudo apt-get update -qq
apt_install golang-go rsync etcd-server openssl

work="$dest/work"
rm -rf "$work"
mkdir -p "$work/home"
# As root apt warns that it downloads unsandboxed (its _apt user cannot write here); the log keeps that quiet.
(cd "$work" && apt-get source --download-only -qq kubernetes >"$work/apt-source.log" 2>&1) || {
    echo "error: apt-get source kubernetes failed:" >&2
    cat "$work/apt-source.log" >&2
    exit 1
}
# bookworm's is "1.20.5+really1.20.2-...": 1.20.2 sources under a higher version number.
dsc=$(ls "$work"/kubernetes_*.dsc | head -n 1)
if ! grep -q "^Version: .*$version" "$dsc"; then
    echo "error: Debian's kubernetes source is not $version ($(grep '^Version:' "$dsc")); this script builds $version" >&2
    exit 1
fi
orig=$(ls "$work"/kubernetes_*.orig.tar.* | head -n 1)
mkdir -p "$work/src"
tar -xf "$orig" -C "$work/src" --strip-components=1

build_env=(
    HOME="$work/home" GOCACHE="$work/home/go-build"
    CGO_ENABLED=0 KUBE_GIT_VERSION="v$version" KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
    KUBE_GIT_COMMIT=0000000000000000000000000000000000000000
)
for c in "${components[@]}"; do
    echo "  make WHAT=cmd/$c"
    (cd "$work/src" && env "${build_env[@]}" nice -n 10 make WHAT="cmd/$c" GOLDFLAGS="-s -w" >"$work/make-$c.log" 2>&1) || {
        echo "error: make WHAT=cmd/$c failed; the last lines of $work/make-$c.log:" >&2
        tail -n 30 "$work/make-$c.log" >&2
        exit 1
    }
done

mkdir -p "$bin"
for c in "${components[@]}"; do
    install -m 0755 "$work/src/_output/local/bin/linux/amd64/$c" "$bin/$c"
done
"$bin/kube-apiserver" --version
touch "$bin/.complete"
chmod -R u+w "$work" && rm -rf "$work"
echo "built Kubernetes $version in $(( $(date +%s) - started )) s: $bin"
