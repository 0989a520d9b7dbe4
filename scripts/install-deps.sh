#!/bin/sh
# Installs every build, test and demo dependency of reef from Debian 12's archive.
# Idempotent: packages already present are left as they are.
set -eu
PKGS="build-essential meson ninja-build pkg-config
 libfuse3-dev fuse3 libgit2-dev libcurl4-openssl-dev libssl-dev libjansson-dev
 libsqlite3-dev sqlite3 liblmdb-dev lmdb-utils libmicrohttpd-dev libyaml-dev libzip-dev
 libdeflate-dev
 git git-lfs curl ca-certificates attr procps psmisc bubblewrap rsync man-db groff-base
 systemd
 python3 python3-pytest python3-gitlab gitlab-cli python3-numpy python3-sklearn python3-pandas"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
