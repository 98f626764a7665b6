#!/usr/bin/env bash
# conftrace walk-through: a backend in the simulated TEE, a health authority
# and three phones. Carol meets Alice, Bob meets Alice, Carol tests positive
# and uploads; Alice is told she was exposed, Bob is not.
#
# Run it from the repository root:
#
#	bash cmd/conftrace/testdata/walkthrough.sh
#
# Everything happens in a temporary directory, removed at exit.
set -euo pipefail

work=$(mktemp -d)
server_pid=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# expect WANT COMMAND...: run COMMAND and check that it prints WANT.
expect() {
	local want=$1 got
	shift
	got=$("$@")
	echo "$got"
	if [ "$got" != "$want" ]; then
		echo "walkthrough: \"$*\" printed \"$got\", want \"$want\"" >&2
		exit 1
	fi
}

# days_ago N: the UTC date N days ago (GNU or BSD date).
days_ago() { date -u -d "$1 days ago" +%Y-%m-%d 2>/dev/null || date -u -v-"$1"d +%Y-%m-%d; }

# start_server: run the backend in the background on $listen and wait
# until it has written its address.
start_server() {
	conftraced --listen "$listen" --data "$work/data" --policy "$work/policy.json" \
		--addr-file "$work/addr" 2>>"$work/serve.log" &
	server_pid=$!
	for _ in $(seq 300); do
		[ -s "$work/addr" ] && return 0
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "walkthrough: the server did not start:" >&2
	cat "$work/serve.log" >&2
	exit 1
}

mkdir "$work/bin"
go build -o "$work/bin/conftrace" ./cmd/conftrace
go build -o "$work/bin/conftraced" ./cmd/conftraced
export PATH="$work/bin:$PATH"
cd "$work"

# 1. A health authority makes its signing key; the public half goes into
#    the backend's policy.
conftrace authority keygen --out lab.key
conftrace policy init --authority lab=lab.key.pub --out policy.json
# The backend writes uploads on its clock, not when they arrive; here every
# 10 seconds (the default is hourly), so that step 9 need not wait long.
sed 's/"store_flush_seconds": [0-9]*/"store_flush_seconds": 10/' policy.json >policy.tmp
mv policy.tmp policy.json
grep -q '"store_flush_seconds": 10' policy.json

# 2. The backend, conftraced, on a free port. It logs its address,
#    measurement and policy hash; --addr-file tells scripts where it listens.
listen=127.0.0.1:0
start_server
addr=$(cat addr)
url="http://$addr"
grep 'msg=listening' serve.log

# 3. Anyone can check which code the backend runs and which policy it
#    enforces. Simulated evidence is refused unless allowed explicitly.
conftrace verify --server "$url" --allow-simulated
if conftrace verify --server "$url" 2>/dev/null; then
	echo "walkthrough: verify accepted a simulated TEE without --allow-simulated" >&2
	exit 1
fi
measurement=$(conftrace verify --server "$url" --allow-simulated --json |
	sed -n 's/^  "measurement": "\([0-9a-f]*\)",$/\1/p')
# In the simulated TEE the measurement is the SHA-256 of the binary.
image_sha=$(sha256sum "$work/bin/conftraced" 2>/dev/null || shasum -a 256 "$work/bin/conftraced")
if [ "$measurement" != "${image_sha%% *}" ]; then
	echo "walkthrough: attested measurement $measurement is not the SHA-256 of conftraced, ${image_sha%% *}" >&2
	exit 1
fi

# 4. Three phones that trust exactly this measurement.
for phone in alice bob carol; do
	conftrace device init --state "$phone" --server "$url" --measurement "$measurement" --allow-simulated
done

# 5. Carol and Alice spend 20 minutes together two days ago; Bob and Alice
#    15 minutes three days ago. Bob never meets Carol.
conftrace device meet --state alice --peer carol --at "$(days_ago 2)T10:00:00Z" --minutes 20
conftrace device meet --state bob --peer alice --at "$(days_ago 3)T14:00:00Z" --minutes 15

# 6. Carol registers a test and shows the code at the test site; the lab
#    signs a positive result for that code.
code=$(conftrace device register-test --state carol)
echo "carol's test code: $code"
conftrace authority result --server "$url" --key lab.key --code "$code" --positive --allow-simulated

# 7. Carol learns the result and, with her consent, uploads her contacts.
expect positive conftrace device check-result --state carol
expect "accepted 2 sightings, 1 daily key" conftrace device upload --state carol

# 8. Alice and Bob check their exposure.
expect exposed conftrace device check-exposure --state alice
expect "not exposed" conftrace device check-exposure --state bob
# (--json prints the backend's whole answer: whether exposed, the last day
# of exposure and by which rules; per day figures only if the policy's
# answers are detailed.)

# 9. Once the backend's clock wrote the upload, check-result says so; the
#    backend restarts on the same data, and the sealed upload survives.
durable=
for _ in $(seq 30); do
	sleep 1
	out=$(conftrace device check-result --state carol 2>&1) || true
	case $out in *"already uploaded"*)
		echo "$out"
		durable=1
		break
		;;
	esac
done
if [ -z "$durable" ]; then
	echo "walkthrough: carol's upload was not durable after 30 seconds: $out" >&2
	exit 1
fi
kill "$server_pid"
wait "$server_pid" || true
server_pid=
listen=$addr
start_server
expect exposed conftrace device check-exposure --state alice

# 10. An upload authorization works once: the backend refuses a second
#     upload with already_used.
if conftrace device upload --state carol; then
	echo "walkthrough: a second upload with the same authorization succeeded" >&2
	exit 1
fi

echo "walkthrough: all steps behaved as expected"
