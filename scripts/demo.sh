#!/bin/sh
# The reef demo: installs what is missing, builds, starts reef-hub with demo data in
# ./.demo, mounts it with reefd at ./.demo/mnt and reads the dataset through the mount.
#   scripts/demo.sh        set up (or reuse) and show
#   scripts/demo.sh stop   unmount and stop the hub
# Environment: REEF_DEMO_PORT (default 18080), REEF_DEMO_DIR (default ./.demo),
# REEF_BUILD (default ./build).
# Rerunnable after a failure or an interrupt: the hub's data is built aside and renamed
# into place once complete, and every later step checks what is there and redoes what
# is missing.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=${REEF_DEMO_DIR:-$ROOT/.demo}
BUILD=${REEF_BUILD:-$ROOT/build}
HUB="$BUILD/tools/hub/reef-hub"
REEFD="$BUILD/daemon/reefd"
MNT="$DEMO/mnt"
PORT=${REEF_DEMO_PORT:-18080}
URL="http://127.0.0.1:$PORT"

stop() {
	if grep -qs " $MNT " /proc/mounts; then
		fusermount3 -u "$MNT" || true
	fi
	for f in reefd hub; do
		if [ -f "$DEMO/$f.pid" ]; then
			kill "$(cat "$DEMO/$f.pid")" 2>/dev/null || true
			rm -f "$DEMO/$f.pid"
		fi
	done
}

if [ "${1:-}" = stop ]; then
	stop
	echo "demo stopped (data kept in $DEMO; remove it to start afresh)"
	exit 0
fi

./scripts/install-deps.sh
[ -d "$BUILD" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" >/dev/null

stop
mkdir -p "$DEMO"
# The hub's data and its token are complete, or built again from nothing: a run stopped
# half-way left them in hub.new and token.new, which are thrown away.
if [ ! -d "$DEMO/hub" ] || [ ! -s "$DEMO/token" ]; then
	rm -rf "$DEMO/hub" "$DEMO/hub.new" "$DEMO/token" "$DEMO/token.new" "$DEMO/cache"
	"$HUB" init "$DEMO/hub.new"
	"$HUB" user add "$DEMO/hub.new" demo --name "Demo Scientist" --email demo@reef.invalid
	(umask 077 && "$HUB" token create "$DEMO/hub.new" demo >"$DEMO/token.new")
	"$HUB" project create "$DEMO/hub.new" acme/iris --visibility private --owner demo >/dev/null
	mv "$DEMO/token.new" "$DEMO/token"
	mv "$DEMO/hub.new" "$DEMO/hub"
fi

# Something already answering on the port (another program, or a demo hub whose pid
# file is gone): say which variable picks another one.
if curl -s -o /dev/null --max-time 2 "$URL/"; then
	echo "demo: port $PORT is taken (something answers at $URL);" \
		"pick another with REEF_DEMO_PORT=<port> scripts/demo.sh" >&2
	exit 1
fi
"$HUB" serve "$DEMO/hub" --listen "127.0.0.1:$PORT" >"$DEMO/hub.out" 2>"$DEMO/hub.log" &
echo $! >"$DEMO/hub.pid"
for _ in $(seq 50); do
	grep -q "listening on" "$DEMO/hub.out" 2>/dev/null && break
	sleep 0.1
done
if ! grep -q "listening on" "$DEMO/hub.out"; then
	cat "$DEMO/hub.log" >&2
	echo "demo: reef-hub did not start on port $PORT; if the port is taken, pick another" \
		"with REEF_DEMO_PORT=<port> scripts/demo.sh" >&2
	exit 1
fi
TOKEN=$(cat "$DEMO/token")

# The dataset: pushed unless the project's main branch already has it (a first run may
# have stopped before or during the push).
if ! curl -fs -o /dev/null -H "PRIVATE-TOKEN: $TOKEN" \
	"$URL/api/v4/projects/acme%2Firis/repository/files/data%2Firis.csv?ref=main"; then
	# The dataset: Fisher's iris measurements as shipped by scikit-learn, with named columns.
	work="$DEMO/seed"
	rm -rf "$work" && mkdir -p "$work/data"
	src=/usr/lib/python3/dist-packages/sklearn/datasets/data/iris.csv
	{
		echo "sepal_length,sepal_width,petal_length,petal_width,species"
		tail -n +2 "$src" | awk -F, 'BEGIN{n[0]="setosa";n[1]="versicolor";n[2]="virginica"}
			{print $1","$2","$3","$4","n[$5]}'
	} >"$work/data/iris.csv"
	printf '# iris\n\nFisher'"'"'s iris dataset (150 flowers, 4 measurements, 3 species).\n' >"$work/README.md"
	git -C "$work" init -q -b main
	git -C "$work" -c user.name=Demo -c user.email=demo@reef.invalid add -A
	git -C "$work" -c user.name=Demo -c user.email=demo@reef.invalid commit -qm "Add the iris dataset"
	git -C "$work" push -q -f "http://demo:$TOKEN@127.0.0.1:$PORT/acme/iris.git" main
	rm -rf "$work"
fi

mkdir -p "$MNT"
"$REEFD" -o "server=$URL,token_file=$DEMO/token,cache=$DEMO/cache" "$MNT" 2>"$DEMO/reefd.log"
for _ in $(seq 50); do
	grep -qs " $MNT " /proc/mounts && break
	sleep 0.1
done
if ! grep -qs " $MNT " /proc/mounts; then
	cat "$DEMO/reefd.log" >&2
	echo "demo: reefd did not mount $MNT" >&2
	exit 1
fi
pgrep -n -f "reefd .*$MNT" >"$DEMO/reefd.pid" || true

echo "== reef-hub at $URL, mounted at $MNT"
echo "\$ ls $MNT/acme/iris/branches/main/data"
ls -l "$MNT/acme/iris/branches/main/data"
echo "\$ head -5 $MNT/acme/iris/HEAD/data/iris.csv"
head -5 "$MNT/acme/iris/HEAD/data/iris.csv"
echo "\$ python3: read the dataset through the mount"
/usr/bin/python3 - "$MNT/acme/iris/HEAD/data/iris.csv" <<'PY'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
by = collections.Counter(r["species"] for r in rows)
print(f"{len(rows)} rows; species: {dict(by)}")
print("mean petal length:", round(sum(float(r["petal_length"]) for r in rows) / len(rows), 3))
PY

# The processor: a code project carrying processor.json, published once (the project
# may exist already, from a run stopped before the publish).
if ! curl -fs -o /dev/null -H "PRIVATE-TOKEN: $TOKEN" "$URL/api/v1/processors/iris-sgd"; then
	curl -fs -o /dev/null -H "PRIVATE-TOKEN: $TOKEN" "$URL/api/v4/projects/acme%2Firis-sgd" ||
		"$HUB" project create "$DEMO/hub" acme/iris-sgd --visibility private --owner demo >/dev/null
	work="$DEMO/seed-processor"
	rm -rf "$work" && mkdir -p "$work"
	cp scripts/demo/train.py scripts/demo/processor.json "$work/"
	git -C "$work" init -q -b main
	git -C "$work" -c user.name=Demo -c user.email=demo@reef.invalid add -A
	git -C "$work" -c user.name=Demo -c user.email=demo@reef.invalid commit -qm "Add the iris SGD processor [skip ci]"
	git -C "$work" push -q -f "http://demo:$TOKEN@127.0.0.1:$PORT/acme/iris-sgd.git" main
	rm -rf "$work"
	curl -fs -o /dev/null -H "PRIVATE-TOKEN: $TOKEN" -H "Content-Type: application/json" \
		-d '{"ref": "main"}' "$URL/api/v1/code-projects/acme%2Firis-sgd/publish"
fi
echo
echo "\$ ls $MNT/.reef/processors; head -16 $MNT/.reef/processors/iris-sgd/README.md"
ls "$MNT/.reef/processors"
head -16 "$MNT/.reef/processors/iris-sgd/README.md"

# An experiment, launched by writing its spec to the control file.
EXP="iris-$(date +%Y%m%d-%H%M%S)"
EXPS="$MNT/acme/iris/experiments"
echo
printf '%s\n' "\$ printf 'name=$EXP\\nprocessor=iris-sgd\\ninput_path=data\\nepochs=15\\nlearning-rate=0.05\\n' > $EXPS/launch"
printf 'name=%s\nprocessor=iris-sgd\ninput_path=data\nepochs=15\nlearning-rate=0.05\n' "$EXP" >"$EXPS/launch"
echo "\$ cat $EXPS/$EXP/status   (followed until the job ends)"
last=""
for _ in $(seq 600); do
	st=$(cat "$EXPS/$EXP/status" 2>/dev/null || echo "?")
	[ "$st" != "$last" ] && echo "  $st" && last=$st
	case "$st" in success | failed | canceled) break ;; esac
	sleep 0.1
done
echo "\$ tail -2 $EXPS/$EXP/log"
tail -2 "$EXPS/$EXP/log"
echo "\$ metrics.json (first and last epochs)"
/usr/bin/python3 - "$EXPS/$EXP/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for r in m[:2] + [{"epoch": "..."}] + m[-2:]:
    print("  ", json.dumps(r))
PY
echo "\$ ls $EXPS/$EXP $EXPS/$EXP/outputs"
ls "$EXPS/$EXP" "$EXPS/$EXP/outputs"
echo "The chart: $EXPS/$EXP/metrics.svg"
cat <<TXT

Explore: ls $MNT/acme/iris/{branches,tags,commits}; cat $MNT/.reef/status
Pin a commit: ls $MNT/acme/iris/commits/\$(getfattr --only-values -n user.reef.commit $MNT/acme/iris/HEAD/)
Launch:  printf 'processor=iris-sgd\\ninput_path=data\\nepochs=20\\n' > $EXPS/launch; ls $EXPS
         (why a launch failed: cat $EXPS/launch.error)
Stop:    scripts/demo.sh stop
TXT
