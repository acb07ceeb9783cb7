#!/usr/bin/env bash
# Portico's benchmarks (docs/BENCHMARKS.md): builds the release binaries, installs the
# load generator (oha, from crates.io, cached in target/bench-tools) and nginx (Debian),
# then runs every scenario side by side with its reference and writes
# bench-results/results.json and bench-results/results.md.
#
#   scripts/bench.sh              # the full run (about 10 minutes on 2 cores)
#   scripts/bench.sh --smoke      # debug build, tiny dataset, 1 s per point: keeps the
#                                 # script working (the test suite runs it; figures mean nothing)
#   scripts/bench.sh --micro      # only the criterion micro-benchmarks
#
# Extra arguments go to scripts/bench/run.py (--duration S, --runs N, --patients N,
# --sessions N, --concurrency C, --out DIR, --scenarios 1,6, --latency-ms N). Everything listens on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
micro=0
args=()
for a in "$@"; do
    case "$a" in
        --smoke) smoke=1; args+=("$a") ;;
        --micro) micro=1 ;;
        *) args+=("$a") ;;
    esac
done

if [[ $micro == 1 ]]; then
    mkdir -p bench-results
    # One cargo invocation for all four crates: separate `-p` runs unify features
    # differently and would rebuild fhirbolt each time.
    cargo bench -p portico-fhir -p portico-access -p portico-cache -p portico-portal \
        --bench reference --bench access --bench cache_key --bench portal_views \
        -- --warm-up-time 1 --measurement-time 2 2>&1 | tee bench-results/micro.txt
    exit 0
fi

target_dir=${CARGO_TARGET_DIR:-target}
# The smoke run only keeps this script working (CI runs it after the tests): the debug
# binaries the other test scripts build are enough, and its figures mean nothing.
profile=release
build=(--release)
if [[ $smoke == 1 ]]; then
    profile=debug
    build=()
fi
echo "== building $profile binaries"
cargo build "${build[@]}" -p portico
cargo build "${build[@]}" -p portico-sandbox --example static_server

tools=target/bench-tools
if [[ ! -x $tools/bin/oha ]]; then
    echo "== installing oha into $tools (once)"
    # With Debian's OpenSSL (libssl-dev) instead of the default aws-lc build; oha 1.16
    # does not compile with no TLS backend at all. Only plain HTTP is used here.
    if ! dpkg -s libssl-dev >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        apt-get install -y -qq libssl-dev pkg-config >/dev/null
    fi
    cargo install oha --locked --no-default-features --features native-tls --root "$tools"
fi

nginx_args=()
if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
    nginx_args=(--nginx "$(command -v nginx || echo /usr/sbin/nginx)")
elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing nginx-light from Debian"
    if (apt-get install -y -qq nginx-light >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nginx-light >/dev/null 2>&1; }); then
        nginx_args=(--nginx /usr/sbin/nginx)
    else
        echo "!! nginx could not be installed: the nginx reference is skipped"
    fi
else
    echo "!! no nginx and no way to install it: the nginx reference is skipped"
fi

ulimit -n 65536 2>/dev/null || true
exec python3 scripts/bench/run.py \
    --portico "$target_dir/$profile/portico" \
    --static "$target_dir/$profile/examples/static_server" \
    --oha "$tools/bin/oha" \
    "${nginx_args[@]}" "${args[@]}"
