#!/bin/sh
# reef's benchmark suite (workloads B1-B8 of DESIGN.md; see docs/benchmarks.md).
# Not part of the test run.
#   scripts/bench.sh [--rev REV] [--quick] [--runs N] [--only B1,B3,...]
# Needs root (it drops the page cache). Data and scratch live in $REEF_BENCH_DIR
# (default /var/tmp/reef-bench; generated data is kept there and reused); raw results go
# to bench/results/<timestamp>.json. The programs measured are a release build of the
# working tree in build-bench/, or with --rev, of that commit exactly (exported with
# git archive into $REEF_BENCH_DIR/src/<commit>, so uncommitted changes do not leak in).
set -eu
cd "$(dirname "$0")/.."
BUILD=${REEF_BUILD:-build-bench}
WORK=${REEF_BENCH_DIR:-/var/tmp/reef-bench}
export REEF_BUILD="$BUILD" REEF_BENCH_DIR="$WORK" REEF_BENCH_CMD="scripts/bench.sh $*"

# One run at a time: runs share the data directory, and would distort each other's timings.
mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock -n 9 || { echo "bench.sh: another run is using $WORK" >&2; exit 1; }

SRC=.
if [ "${1:-}" = "--rev" ]; then
	[ $# -ge 2 ] || { echo "bench.sh: --rev needs a commit" >&2; exit 2; }
	rev=$(git rev-parse --verify "$2^{commit}")
	shift 2
	SRC="$WORK/src/$rev"
	BUILD="$SRC/build-bench"
	if [ ! -f "$SRC/meson.build" ]; then
		mkdir -p "$SRC"
		git archive "$rev" | tar -x -C "$SRC"
	fi
	export REEF_BUILD="$BUILD" REEF_BENCH_REV="$rev"
fi

scripts/install-deps.sh
scripts/install-bench-deps.sh
build() {
	{ [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "$SRC" --buildtype=release; } &&
		ninja -C "$BUILD"
}
if ! build >"$WORK/build.log" 2>&1; then
	tail -n 30 "$WORK/build.log" >&2
	echo "bench.sh: the build failed (whole log: $WORK/build.log)" >&2
	exit 1
fi

# The suite unmounts and stops what it started; this catches what a killed Python left.
cleanup() {
	if [ -f "$WORK/run/pids" ]; then
		while read -r pid; do
			[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
		done <"$WORK/run/pids"
	fi
	awk -v d="$WORK/run/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo |
		while read -r m; do fusermount3 -uz "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
/usr/bin/python3 bench/bench.py "$@"
