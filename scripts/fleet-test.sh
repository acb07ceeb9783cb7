#!/usr/bin/env bash
# The fleet tests: starts a fleet with scripts/fleet.sh --detach (Redis, the sandbox, three
# gateways, nginx round-robin in front; all on 127.0.0.1), runs tests/fleet/run.py against
# it (Python 3 standard library only), and stops every process of the fleet at the end,
# failure or not. On failure the fleet's logs are copied to target/fleet-test-logs/.
#
#   scripts/fleet-test.sh                   # build with cargo, then test
#   scripts/fleet-test.sh --binary PATH     # test this portico binary
#   scripts/fleet-test.sh --only paging,redis
#
# Bounded: the checks get FLEET_TEST_TIMEOUT seconds (default 180), then are killed.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=
only=()
while (($#)); do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --only) only=(--only "$2"); shift 2 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fleet-test: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
if [[ -z $binary ]]; then
    cargo build -p portico
    binary="${CARGO_TARGET_DIR:-target}/debug/portico"
fi

state_dir=$(mktemp -d "${TMPDIR:-/tmp}/portico-fleet-test.XXXXXX")
state="$state_dir/fleet.state"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
status=1
finish() {
    trap - EXIT INT TERM
    if [[ -r $state ]]; then
        if ((status != 0)); then
            work=$(sed -n 's/^WORK=//p' "$state")
            rm -rf target/fleet-test-logs
            mkdir -p target/fleet-test-logs
            cp "$work"/*.log "$work"/*.toml "$work"/nginx.conf target/fleet-test-logs/ 2>/dev/null || true
            cp "$work"/nginx/*.log target/fleet-test-logs/ 2>/dev/null || true
            echo "fleet-test: the fleet's logs are in target/fleet-test-logs/" >&2
        fi
        scripts/fleet.sh --stop --state "$state" || true
    fi
    rm -rf "$state_dir"
    exit "$status"
}
trap finish EXIT
trap 'status=130; exit' INT
trap 'status=143; exit' TERM

scripts/fleet.sh --detach --replicas 3 --port "$port" --binary "$binary" --state "$state" >"$state_dir/fleet.out"
set +e
timeout --kill-after=5 "${FLEET_TEST_TIMEOUT:-180}" python3 tests/fleet/run.py --state "$state" "${only[@]}"
status=$?
set -e
if ((status == 124)); then
    echo "fleet-test: the checks did not finish within ${FLEET_TEST_TIMEOUT:-180}s" >&2
fi
