#!/bin/sh
# Builds the libFuzzer targets of tests/fuzz with clang, ASan and UBSan in their own build
# directory (build-fuzz/) and runs each for SECONDS (default 60) on a copy of its seed
# corpus, printing libFuzzer's final statistics. Not part of the test suite: the unit
# suite only replays the seed corpora (fuzz_replay_*).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# New inputs found stay in build-fuzz/corpus/<target>/; crashes in build-fuzz/crashes/.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
dir=build-fuzz
if [ ! -d "$dir" ]; then
	CC=clang meson setup "$dir" -Dfuzz=true -Dintegration=false \
		-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
fi
ninja -C "$dir"
targets=${*:-$(ls tests/fuzz/corpus)}
mkdir -p "$dir/crashes"
status=0
for t in $targets; do
	bin="$dir/tests/fuzz/fuzz_$t"
	[ -x "$bin" ] || { echo "no target fuzz_$t" >&2; status=1; continue; }
	mkdir -p "$dir/corpus/$t"
	cp -n tests/fuzz/corpus/"$t"/* "$dir/corpus/$t/" 2>/dev/null || true
	echo "== fuzz_$t: ${secs}s"
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	ASAN_OPTIONS=detect_leaks=1 \
	"$bin" -max_total_time="$secs" -print_final_stats=1 -max_len=65536 -timeout=10 \
		-rss_limit_mb=2048 -artifact_prefix="$dir/crashes/$t-" "$dir/corpus/$t" \
		2>"$dir/fuzz_$t.log" || { status=1; tail -40 "$dir/fuzz_$t.log"; }
	grep -E '^stat::(number_of_executed_units|peak_rss_mb)|cov: ' "$dir/fuzz_$t.log" | tail -3
done
exit $status
