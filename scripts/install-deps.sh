#!/usr/bin/env bash
# Installs the Debian packages dbward builds, tests and demos with.
# Called by the Makefile when a tool or header is missing, and by .ci/run.
# Needs root (apt-get); does nothing when everything is present.
set -euo pipefail

packages=(
	# build
	build-essential clang llvm pkg-config bpftool
	libbpf-dev libelf-dev zlib1g-dev
	libssl-dev libyaml-dev libpg-query-dev libprotobuf-c-dev protobuf-c-compiler
	libzstd-dev libsqlite3-dev libpq-dev libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev
	# tests, demo
	libcriterion-dev python3-pytest python3-psycopg2
	postgresql postgresql-contrib pgbouncer iproute2 util-linux procps sqlite3 zstd
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages: ${missing[*]}" >&2
	echo "install-deps: run as root: sudo $0" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
