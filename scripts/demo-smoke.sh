#!/usr/bin/env bash
# Starts `portico demo` on free ports, logs in as a demo patient with
# scripts/smart-login.py, walks through the portal API with
# scripts/portal-walkthrough.py, checks the gateway's probes, and stops the demo.
# PROFILE=release uses the release binary (what the README's demo command runs).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-debug}"
if [ "$profile" = release ]; then cargo build --release -p portico; else cargo build -p portico; fi
bin="${CARGO_TARGET_DIR:-target}/$profile/portico"

# check-config: the example passes (its secret variable set), a bad key exits 64 naming it.
PORTICO_UPSTREAM_CLIENT_SECRET=example "$bin" check-config config/portico.example.toml
bad=$(mktemp)
sed 's/^listen = /lisen = /' config/portico.example.toml >"$bad"
set +e
PORTICO_UPSTREAM_CLIENT_SECRET=example "$bin" check-config "$bad" 2>"$bad.err"
code=$?
set -e
if [ "$code" != 64 ] || ! grep -q 'server.lisen' "$bad.err"; then
  echo "check-config on a bad key: exit $code, stderr:"; cat "$bad.err"; exit 1
fi
rm -f "$bad" "$bad.err"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw=$(free_port); ehr=$(free_port)
log=$(mktemp)   # application logs (stderr)
out=$(mktemp)   # what the demo prints on purpose (stdout)
RUST_LOG=debug "$bin" demo --port "$gw" --ehr-port "$ehr" --patients 20 >"$out" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log" "$out"' EXIT

for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$gw/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "demo exited early:"; cat "$out" "$log"; exit 1; fi
  sleep 0.5
done
grep -q "Demo patients" "$out" || { echo "demo banner missing"; cat "$out"; exit 1; }

python3 scripts/smart-login.py --ehr "http://127.0.0.1:$ehr" --gateway "http://127.0.0.1:$gw"
# The same SMART login, reading through the gateway's patient-scoped facade.
python3 scripts/smart-login.py --ehr "http://127.0.0.1:$ehr" --fhir "http://127.0.0.1:$gw/fhir" --patient pat-2
# The portal API as a logged-in patient (cookie session + CSRF): book, cancel and
# reschedule, refills (eligible and refused), a referral, messages, paying a bill.
python3 scripts/portal-walkthrough.py --gateway "http://127.0.0.1:$gw" --patient pat-3

# The audit trail: one JSON object per line, stamped with the instance, and the same
# records delivered to the sandbox as FHIR AuditEvents.
python3 - "$out" "http://127.0.0.1:$ehr/_sandbox/stats" <<'PY'
import json, sys, time, urllib.request
path = next(l.split(": ", 1)[1].strip() for l in open(sys.argv[1]) if l.startswith("Audit log: "))
records = [json.loads(l) for l in open(path)]
assert records and all(r.get("instance") for r in records), "audit records without an instance"
for _ in range(50):
    stats = json.load(urllib.request.urlopen(sys.argv[2], timeout=10))
    sent = sum(c["count"] for c in stats["by_method_and_type"]
               if c["method"] == "POST" and c["resource_type"] == "AuditEvent")
    if sent:
        break
    time.sleep(0.2)
else:
    sys.exit("no AuditEvent reached the sandbox")
print(f"audit: {len(records)} records in {path}, {sent} AuditEvents POSTed to the sandbox")
PY

# Even at debug level, the application log carries no tokens, names or birth dates.
if grep -q 'eyJ' "$log"; then echo "a JWT reached the application log"; exit 1; fi
python3 - "$log" "http://127.0.0.1:$ehr/auth/patients" <<'PY'
import json, sys, urllib.request
log = open(sys.argv[1]).read()
patients = json.load(urllib.request.urlopen(sys.argv[2], timeout=10))
leaks = [f for p in patients for f in (p["name"], p["birth_date"]) if f in log]
if leaks:
    sys.exit(f"patient data reached the application log: {len(leaks)} values")
print(f"application log: {len(log.splitlines())} lines, no tokens or patient data")
PY

# The demo must stop cleanly on SIGTERM.
kill -TERM "$pid"
for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
if kill -0 "$pid" 2>/dev/null; then echo "demo did not stop on SIGTERM"; exit 1; fi
echo "smoke: 5 passed, 0 failed"
