#!/usr/bin/env bash
# The patient portal in a real browser (tests/browser/portal.py): headless Chromium and
# the system's chromedriver (scripts/install-deps.sh installs both), Selenium from PyPI
# and axe-core from npm, pinned (tests/browser/requirements.txt, package.json) and
# installed into $target/browser on first use. Starts `portico demo` on free ports
# (the debug binary), runs every flow with JavaScript on, off, and keyboard-only, runs
# axe-core on every page, and regenerates the screenshots in docs/portal/.
#   SCREENSHOTS=0 skips writing them; MODES=js,nojs,keyboard picks the runs.
# In CI a missing browser or a failed install is fatal; elsewhere the tests are skipped
# with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
dir="$target/browser"
skip() {
  if [ "${CI:-}" = "true" ]; then echo "browser-tests: $1" >&2; exit 1; fi
  echo "browser-tests: $1; skipped" >&2
  exit 0
}
for tool in /usr/bin/chromium /usr/bin/chromedriver node npm python3; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is missing (scripts/install-deps.sh)"
done

mkdir -p "$dir"
if [ ! -x "$dir/venv/bin/python" ] || ! cmp -s tests/browser/requirements.txt "$dir/requirements.txt"; then
  { python3 -m venv "$dir/venv" \
      && "$dir/venv/bin/pip" install -q -r tests/browser/requirements.txt \
      && cp tests/browser/requirements.txt "$dir/requirements.txt"; } \
    || skip "cannot install Selenium from PyPI"
fi
axe="$dir/node_modules/axe-core/axe.min.js"
if [ ! -f "$axe" ] || ! cmp -s tests/browser/package.json "$dir/package.json"; then
  { cp tests/browser/package.json "$dir/package.json" \
      && npm install --silent --no-audit --no-fund --prefix "$dir" >/dev/null; } \
    || skip "cannot install axe-core from npm"
fi

cargo build -p portico
bin="$target/debug/portico"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw=$(free_port); ehr=$(free_port)
out=$(mktemp); log=$(mktemp)
"$bin" demo --port "$gw" --ehr-port "$ehr" --patients 10 >"$out" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out" "$log"' EXIT
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$gw/healthz" >/dev/null 2>&1 && grep -q 'portico-system' "$out"; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "demo exited early:"; cat "$out" "$log"; exit 1; fi
  sleep 0.5
done
grep -q "open http://127.0.0.1:$gw/ and sign in" "$out" || { echo "demo banner lacks the portal line"; cat "$out"; exit 1; }
secret=$(awk '$1 == "portico-system" { print $3 }' "$out")

shots=()
if [ "${SCREENSHOTS:-1}" != 0 ]; then shots=(--screenshots docs/portal); fi
"$dir/venv/bin/python" tests/browser/portal.py \
  --gateway "http://127.0.0.1:$gw" --ehr "http://127.0.0.1:$ehr" \
  --system-secret="$secret" --axe "$axe" --modes "${MODES:-js,nojs,keyboard}" "${shots[@]}"
