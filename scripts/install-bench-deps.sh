#!/bin/sh
# Installs what the benchmark suite (scripts/bench.sh) needs beyond the build and test
# dependencies of scripts/install-deps.sh: the contenders reef is measured against
# (bindfs, rclone), GNU time, and the profilers used when a target is missed.
# Idempotent: packages already present are left as they are.
set -eu
PKGS="bindfs rclone time valgrind linux-perf strace"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
