#!/usr/bin/env bash
# Interoperability with software nobody on this team wrote (issue #7).
#
# Installs the pinned third-party peers into .interop/ (npm ci from
# tests/interop/package-lock.json, a Python venv from tests/interop/requirements.txt),
# builds `portico`, and runs each scenario: the gateway in front of an EHR it was not
# written against, driven by the portal walkthrough, the facade checks and the SMART/FHIR
# client libraries apps use. Prints a summary; exits non-zero when any scenario fails.
# Node >= 20, npm and Python >= 3.9 must be installed: missing ones fail the run.
#
#   scripts/interop.sh                 # the default scenarios
#   scripts/interop.sh medplum         # only the named ones
#   INTEROP_KEEP_LOGS=1 scripts/interop.sh   # keep .interop/logs/ of passing runs too
#
# Scenarios (see docs/INTEROP.md):
#   sandbox   the baseline: our own sandbox EHR (FHIR + SMART auth) behind the gateway,
#             the same checks and clients as below, with real paging links.
#   medplum   upstream = Medplum's FHIR engine (@medplum/fhir-router + MemoryRepository),
#             login and tokens from the sandbox's SMART authorization server; portal
#             walkthrough, facade checks, JS fhirclient, Python fhirclient and fhirpy.
#   sekmet    upstream = sekmet-fhir (PyPI; FastAPI + SQLite, strict validation, real
#             paging links), same auth and checks.
#   oidc      authorization server = panva oidc-provider (portal login, bearer tokens,
#             the gateway's private_key_jwt upstream token), upstream = Medplum; plus
#             client_credentials with a secret, refresh, JWT claims (oidc_checks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/.interop"
logs="$work/logs"
default_scenarios=(sandbox medplum sekmet oidc)
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${default_scenarios[@]}")

die() { echo "interop: $*" >&2; exit 1; }

for scenario in "${scenarios[@]}"; do
  case "$scenario" in sandbox|medplum|sekmet|oidc) ;; *) die "unknown scenario: $scenario (sandbox, medplum, sekmet, oidc)" ;; esac
done

# --- prerequisites: fail loudly, never skip -------------------------------------------
command -v node >/dev/null || die "node (>= 20) is required and not installed"
command -v npm >/dev/null || die "npm is required and not installed"
command -v python3 >/dev/null || die "python3 (>= 3.9) is required and not installed"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node >= 20 is required (found $(node --version))"
python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' \
  || die "python3 >= 3.9 with the venv module is required"
node_flags=()
[ "$node_major" -ge 22 ] || node_flags=(--experimental-websocket)   # Medplum needs WebSocket

# --- installs (pinned; into .interop/, which git ignores) -----------------------------
mkdir -p "$work/node" "$logs"
if ! cmp -s tests/interop/package-lock.json "$work/node/package-lock.json" \
   || [ ! -d "$work/node/node_modules" ]; then
  echo "== npm ci (tests/interop/package-lock.json)"
  cp tests/interop/package.json tests/interop/package-lock.json "$work/node/"
  # --legacy-peer-deps (the lock was made with it too): npm 11's `ci` otherwise stops on
  # an optional peer of @medplum/core that no lock lists with a version ("Missing:
  # @expo/env@ from lock file"); none of the optional peers is used here.
  (cd "$work/node" && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error) >"$logs/npm.log" 2>&1 \
    || { cat "$logs/npm.log"; die "npm ci failed"; }
fi
cp tests/interop/*.mjs "$work/node/"   # ESM resolves packages next to the script
if ! cmp -s tests/interop/requirements.txt "$work/venv/requirements.txt" 2>/dev/null; then
  echo "== python venv (tests/interop/requirements.txt)"
  rm -rf "$work/venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt \
    >"$logs/pip.log" 2>&1 || { cat "$logs/pip.log"; die "pip install failed"; }
  cp tests/interop/requirements.txt "$work/venv/requirements.txt"
fi
py="$work/venv/bin/python"
if [[ " ${scenarios[*]} " == *" sekmet "* ]] \
   && ! cmp -s tests/interop/requirements-sekmet.txt "$work/sekmet-venv/requirements.txt" 2>/dev/null; then
  echo "== sekmet-fhir venv (tests/interop/requirements-sekmet.txt)"
  rm -rf "$work/sekmet-venv"
  python3 -m venv "$work/sekmet-venv"
  "$work/sekmet-venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements-sekmet.txt \
    >"$logs/pip-sekmet.log" 2>&1 || { cat "$logs/pip-sekmet.log"; die "pip install (sekmet-fhir) failed"; }
  cp tests/interop/requirements-sekmet.txt "$work/sekmet-venv/requirements.txt"
fi

echo "== cargo build -p portico"
cargo build -q -p portico
bin="${CARGO_TARGET_DIR:-$root/target}/debug/portico"

# --- helpers -------------------------------------------------------------------------
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url what pid
  for _ in $(seq 1 240); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "$2 exited early"; return 1; }
    sleep 0.25
  done
  echo "$2 did not answer at $1"; return 1
}
step() { # name command...
  local name=$1; shift
  echo "-- $name"
  if "$@" >"$logs/$scenario.$name.log" 2>&1; then
    tail -n 1 "$logs/$scenario.$name.log"
  else
    echo "FAILED: $name (log: $logs/$scenario.$name.log)"; tail -n 25 "$logs/$scenario.$name.log"
    return 1
  fi
}

# Starts `portico sandbox` for its SMART authorization server only (its FHIR data is
# not used), accepting the gateway's /fhir as `aud`. Sets sb_port, portal_secret.
start_sandbox_auth() { # patients gateway_port
  sb_port=$(free_port)
  "$bin" sandbox --port "$sb_port" --patients "$1" --audience "http://127.0.0.1:$2/fhir" \
    >"$logs/$scenario.sandbox.out" 2>"$logs/$scenario.sandbox.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$sb_port/fhir/.well-known/smart-configuration" sandbox "$!"
  for _ in $(seq 1 40); do grep -q '^  portico-portal' "$logs/$scenario.sandbox.out" && break; sleep 0.1; done
  portal_secret=$(awk '$1 == "portico-portal" && $2 == "secret" {print $3}' "$logs/$scenario.sandbox.out")
  [ -n "$portal_secret" ] || { echo "no portico-portal secret in the sandbox banner"; return 1; }
}

# Writes a gateway config: upstream $1 (auth none), inbound tokens and portal login from
# the sandbox's authorization server on sb_port.
gateway_config() { # upstream_base gateway_port file [check_capabilities]
  cat >"$3" <<EOF
[server]
listen = "127.0.0.1:$2"
[log]
format = "text"
level = "info,tower_http=warn"
[ehr]
profile = "generic-r4"
check_capabilities = ${4:-true}
[portal]
payment_processor = "sandbox"
[upstream]
base_url = "$1"
[upstream.auth]
type = "none"
[auth]
issuer = "http://127.0.0.1:$sb_port/auth"
jwks_url = "http://127.0.0.1:$sb_port/auth/jwks"
authorize_url = "http://127.0.0.1:$sb_port/auth/authorize"
token_url = "http://127.0.0.1:$sb_port/auth/token"
audiences = ["http://127.0.0.1:$sb_port/fhir", "http://127.0.0.1:$2/fhir"]
[audit]
path = "$logs/$scenario.audit.jsonl"
[login]
client_id = "portico-portal"
client_secret_env = "INTEROP_PORTAL_SECRET"
aud = "http://127.0.0.1:$sb_port/fhir"
EOF
}

start_gateway() { # config gateway_port
  INTEROP_PORTAL_SECRET="$portal_secret" INTEROP_SYSTEM_SECRET="${INTEROP_SYSTEM_SECRET:-}" "$bin" serve --config "$1" >"$logs/$scenario.gateway.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$2/readyz" gateway "$!"
}

# The checks every upstream gets, through the gateway at gw_port. $1: the walkthrough's
# extra flags; $2: the facade's and the clients' extra flags (word-split on purpose).
client_checks() {
  local fhir="http://127.0.0.1:$gw_port/fhir" walk=$1 paging=$2
  # shellcheck disable=SC2086
  step walkthrough python3 scripts/portal-walkthrough.py --gateway "http://127.0.0.1:$gw_port" \
    --patient pat-1 $walk || return 1
  # shellcheck disable=SC2086
  step facade python3 tests/interop/facade_checks.py --fhir "$fhir" --patient pat-2 --other pat-1 \
    --other-observation obs-1-1 $paging || return 1
  # shellcheck disable=SC2086
  step fhirclient-js node "$work/node/fhirclient-js.mjs" --fhir "$fhir" --patient pat-3 --other pat-1 $paging || return 1
  # shellcheck disable=SC2086
  step fhirclient-py "$py" tests/interop/fhirclient_py.py --fhir "$fhir" --patient pat-3 --other pat-1 $paging || return 1
  # shellcheck disable=SC2086
  step fhirpy "$py" tests/interop/fhirpy_client.py --fhir "$fhir" --patient pat-3 --other pat-1 $paging || return 1
}

# --- scenarios -----------------------------------------------------------------------

# The baseline: the same gateway config shape in front of our own sandbox EHR (its FHIR
# server and its authorization server; system token by client credentials).
scenario_sandbox() {
  gw_port=$(free_port)
  start_sandbox_auth 3 "$gw_port" || return 1
  local system_secret
  system_secret=$(awk '$1 == "portico-system" && $2 == "secret" {print $3}' "$logs/$scenario.sandbox.out")
  gateway_config "http://127.0.0.1:$sb_port/fhir" "$gw_port" "$work/$scenario.toml"
  python3 - "$work/$scenario.toml" "$sb_port" <<'PY'
import sys
path, port = sys.argv[1], sys.argv[2]
text = open(path).read().replace('[upstream.auth]\ntype = "none"\n', f"""[upstream.auth]
type = "client_credentials"
token_url = "http://127.0.0.1:{port}/auth/token"
client_id = "portico-system"
client_secret_env = "INTEROP_SYSTEM_SECRET"
scope = "system/*.read system/*.write"
""")
open(path, "w").write(text)
PY
  INTEROP_SYSTEM_SECRET="$system_secret" start_gateway "$work/$scenario.toml" "$gw_port" || return 1
  client_checks "" ""
}

scenario_medplum() {
  local mp_port; mp_port=$(free_port); gw_port=$(free_port)
  # Medplum scans every resource per search: 3 patients (about 2000 resources, most of
  # them Slots) keeps each search under ~100 ms.
  "$bin" sandbox export --patients 3 --seed 42 --out "$work/medplum-dataset.json" 2>/dev/null
  start_sandbox_auth 3 "$gw_port" || return 1
  node "${node_flags[@]}" "$work/node/medplum-server.mjs" --port "$mp_port" \
    --load "$work/medplum-dataset.json" >"$logs/$scenario.medplum.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$mp_port/fhir/metadata" medplum "$!" || return 1
  gateway_config "http://127.0.0.1:$mp_port/fhir" "$gw_port" "$work/$scenario.toml"
  start_gateway "$work/$scenario.toml" "$gw_port" || return 1
  client_checks --plain-fhir-server --no-upstream-paging
}

# Upstream = sekmet-fhir (FastAPI + SQLite; strict inbound validation, indexed search,
# real paging links). Its hospital simulator is off: it would answer our Appointments and
# MedicationRequests on its own.
scenario_sekmet() {
  local sk_port; sk_port=$(free_port); gw_port=$(free_port)
  local dir="$work/sekmet-run"
  rm -rf "$dir"; mkdir -p "$dir/keys"
  cat >"$dir/settings.yaml" <<YAML
base_url: http://127.0.0.1:$sk_port/fhir
host: 127.0.0.1
port: $sk_port
data_dir: $dir/data
own_private_key_path: $dir/keys/sekmet_private.pem
simulator:
  enabled: false
validation:
  inbound: strict
log_inbound: false
YAML
  "$bin" sandbox export --patients 3 --seed 42 --out "$dir/dataset.json" 2>/dev/null
  start_sandbox_auth 3 "$gw_port" || return 1
  (cd "$dir" && exec "$work/sekmet-venv/bin/sekmet" serve --config "$dir/settings.yaml") \
    >"$logs/$scenario.sekmet.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$sk_port/fhir/metadata" sekmet "$!" || return 1
  step load python3 tests/interop/load_transaction.py "$dir/dataset.json" "http://127.0.0.1:$sk_port/fhir" || return 1
  # Its CapabilityStatement leaves out CareTeam and PaymentReconciliation (which its
  # generic handlers do serve): the start-up check refuses it as it should, so it is off.
  gateway_config "http://127.0.0.1:$sk_port/fhir" "$gw_port" "$work/$scenario.toml" false
  start_gateway "$work/$scenario.toml" "$gw_port" || return 1
  client_checks "--plain-fhir-server --skip-payments" ""
}

# Authorization server = panva oidc-provider (upstream = Medplum's engine again): the
# gateway's portal login, bearer validation (keys discovered from the issuer's
# openid-configuration) and its upstream system token (private_key_jwt, RS384) against
# it, by configuration only.
scenario_oidc() {
  local op_port mp_port dir="$work/oidc-run"
  op_port=$(free_port); mp_port=$(free_port); gw_port=$(free_port)
  rm -rf "$dir"; mkdir -p "$dir"
  node "$work/node/oidc-provider.mjs" --port "$op_port" --resource "http://127.0.0.1:$gw_port/fhir" \
    --patients pat-1,pat-2,pat-3 --gateway-callback "http://127.0.0.1:$gw_port/auth/callback" \
    --out-dir "$dir" >"$logs/$scenario.oidc-provider.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$op_port/.well-known/openid-configuration" oidc-provider "$!" || return 1
  "$bin" sandbox export --patients 3 --seed 42 --out "$dir/dataset.json" 2>/dev/null
  node "${node_flags[@]}" "$work/node/medplum-server.mjs" --port "$mp_port" \
    --load "$dir/dataset.json" >"$logs/$scenario.medplum.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$mp_port/fhir/metadata" medplum "$!" || return 1
  cat >"$work/$scenario.toml" <<EOF
[server]
listen = "127.0.0.1:$gw_port"
[log]
format = "text"
level = "info,tower_http=warn"
[ehr]
profile = "generic-r4"
[portal]
payment_processor = "sandbox"
[upstream]
base_url = "http://127.0.0.1:$mp_port/fhir"
[upstream.auth]
type = "backend_services"
token_url = "http://127.0.0.1:$op_port/token"
client_id = "portico-system-jwt"
private_key_file = "$dir/system-jwt.pem"
algorithm = "RS384"
kid = "portico-system-jwt"
scope = "system/*.read system/*.write"
[auth]
issuer = "http://127.0.0.1:$op_port"
authorize_url = "http://127.0.0.1:$op_port/auth"
token_url = "http://127.0.0.1:$op_port/token"
audiences = ["http://127.0.0.1:$gw_port/fhir"]
[audit]
path = "$logs/$scenario.audit.jsonl"
[login]
client_id = "portico-portal"
client_secret_file = "$dir/portal.secret"
aud = "http://127.0.0.1:$gw_port/fhir"
EOF
  "$bin" serve --config "$work/$scenario.toml" >"$logs/$scenario.gateway.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$gw_port/readyz" gateway "$!" || return 1
  step oidc-grants python3 tests/interop/oidc_checks.py --issuer "http://127.0.0.1:$op_port" \
    --fhir "http://127.0.0.1:$gw_port/fhir" --system-secret-file "$dir/system.secret" \
    --readyz "http://127.0.0.1:$gw_port/readyz" --patient pat-2 || return 1
  client_checks --plain-fhir-server --no-upstream-paging
}

declare -A result
failed=0
for scenario in "${scenarios[@]}"; do
  echo "== scenario: $scenario"
  started=$SECONDS
  if "scenario_$scenario"; then
    result[$scenario]="passed ($((SECONDS - started)) s)"
  else
    result[$scenario]="FAILED ($((SECONDS - started)) s; logs in $logs/)"
    failed=$((failed + 1))
  fi
  cleanup
done

echo "== interop summary"
for scenario in "${scenarios[@]}"; do printf '  %-10s %s\n' "$scenario" "${result[$scenario]}"; done
if [ "$failed" -gt 0 ]; then echo "interop: $failed of ${#scenarios[@]} scenarios failed"; exit 1; fi
[ -n "${INTEROP_KEEP_LOGS:-}" ] || rm -f "$logs"/*.log "$logs"/*.out "$logs"/*.jsonl
echo "interop: ${#scenarios[@]} of ${#scenarios[@]} scenarios passed"
