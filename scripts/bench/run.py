#!/usr/bin/env python3
"""Portico's benchmark driver (issue #6). Called by scripts/bench.sh, which builds the
release binaries and installs the tools first; run it alone only with those in place:

    python3 scripts/bench/run.py --portico target/release/portico \
        --static target/release/examples/static_server --oha target/bench-tools/bin/oha \
        [--nginx /usr/sbin/nginx] [--smoke] [--out bench-results]

Starts one sandbox EHR (`portico sandbox`), gateways (`portico serve`) with the cache on
and off, nginx as a plain reverse proxy to the same sandbox, and the static-bytes server,
then runs the scenarios of docs/BENCHMARKS.md, each side by side with its reference in
the same run, medians over several runs. Writes results.json and results.md to --out.

Everything listens on 127.0.0.1 only; every load run is bounded in time or count.
Standard library only.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import socket
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

HOST = "127.0.0.1"
# Five-digit ports everywhere, so that a base URL rewritten from the sandbox's to the
# gateway's keeps its length (scenario 6 compares body sizes).
SANDBOX_PORT = 18090
GW_CACHE_PORT = 18080
GW_NOCACHE_PORT = 18081
GW_MEM_PORT = 18082
GW_START_PORT = 18083
NGINX_PORT = 18070
STATIC_PORTAL_PORT = 18060
STATIC_FACADE_PORT = 18061
# Scenario 8: one gateway per audit durability (and the no-durable-trail reference).
# Scenario 9: a gateway sharing state through Redis, and its Redis.
GW_REDIS_PORT = 18088
REDIS_PORT = 18379
AUDIT_PORTS = {"no_durable_trail": 18084, "async": 18085, "written": 18086, "synced": 18087}

LAB_QUERY = "category=laboratory"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- HTTP helpers


class Http:
    """A keep-alive HTTP/1.1 client for one host:port (one per thread)."""

    def __init__(self, port, timeout=60):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, resp.headers, payload
            except (http.client.HTTPException, ConnectionError, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def json(self, method, path, body=None, headers=None):
        status, h, payload = self.request(method, path, body, headers)
        try:
            return status, h, json.loads(payload) if payload else None
        except ValueError:
            return status, h, payload


def get_status(port, path, timeout=2):
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status
    except OSError:
        return None


def wait_ready(port, path, deadline_s, proc=None):
    """Polls until `path` answers 200; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        if get_status(port, path) == 200:
            return time.monotonic() - start
        time.sleep(0.005)
    raise RuntimeError(f"port {port} {path} not ready after {deadline_s}s")


# ---------------------------------------------------------------- processes


class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, cmd, env=None):
        out = open(os.path.join(self.workdir, f"{name}.log"), "w")
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                             start_new_session=True)
        p.bench_name = name
        self.procs.append(p)
        return p

    def stop(self, p, timeout=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            self.stop(p)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------- tokens


def patient_token(sandbox, patient, scope="launch/patient openid fhirUser patient/*.rs"):
    """An access token for `patient` from the sandbox's SMART server: authorization code +
    PKCE (S256), auto-approved with login_hint, exactly like scripts/smart-login.py."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = "http://127.0.0.1:9/callback"
    aud = f"http://{HOST}:{SANDBOX_PORT}/fhir"
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": "demo-app", "redirect_uri": redirect_uri,
        "scope": scope, "state": "s", "aud": aud, "code_challenge": challenge,
        "code_challenge_method": "S256", "login_hint": patient,
    })
    status, headers, body = sandbox.request("GET", f"/auth/authorize?{query}")
    if status != 302:
        raise RuntimeError(f"authorize for {patient}: {status} {body[:200]!r}")
    code = urllib.parse.parse_qs(urllib.parse.urlparse(headers["Location"]).query)["code"][0]
    form = urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": "demo-app", "code_verifier": verifier,
    }).encode()
    status, _, body = sandbox.request(
        "POST", "/auth/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise RuntimeError(f"token for {patient}: {status} {body[:200]!r}")
    return json.loads(body)["access_token"]


_local = threading.local()


def thread_client(port):
    clients = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = {}
    if port not in clients:
        clients[port] = Http(port)
    return clients[port]


def tokens_for(patients, workers=8):
    def one(p):
        return patient_token(thread_client(SANDBOX_PORT), p)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return dict(zip(patients, ex.map(one, patients)))


# ---------------------------------------------------------------- sandbox counters


def sandbox_reset():
    s = Http(SANDBOX_PORT)
    status, _, _ = s.request("POST", "/_sandbox/stats/reset")
    if status not in (200, 204):
        raise RuntimeError(f"/_sandbox/stats/reset answered {status}")


def sandbox_stats():
    status, _, body = Http(SANDBOX_PORT).json("GET", "/_sandbox/stats")
    if status != 200:
        raise RuntimeError(f"/_sandbox/stats answered {status}")
    return body


def fhir_calls(stats, exclude_metadata=True):
    """FHIR requests the sandbox counted (metadata probes excluded)."""
    return sum(c["count"] for c in stats["by_method_and_type"]
               if not (exclude_metadata and c["resource_type"] == "metadata"))


def sandbox_requests():
    """The sandbox's latest requests since the last reset, in order (method, target)."""
    status, _, body = Http(SANDBOX_PORT).json("GET", "/_sandbox/requests")
    if status != 200:
        raise RuntimeError(f"/_sandbox/requests answered {status}")
    return body


WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# What a write of one type makes stale besides its own type: a booking takes its Slot.
ALSO_STALE = {"Appointment": {"Slot"}}


def session_floor(requests):
    """The fewest EHR requests a session's script needs, from the requests a gateway with
    no cache made for it: every write, each distinct read once, and a read again when a
    write of its type (or of one that makes it stale) came in between. Metadata probes
    are not counted."""
    seen, floor = set(), 0
    for r in requests:
        path = r["target"].split("?", 1)[0]
        rtype = path.removeprefix("/fhir").strip("/").split("/")[0]
        if rtype == "metadata":
            continue
        if r["method"] in WRITES:
            floor += 1
            if rtype == "":  # a transaction or batch: anything may be stale
                seen.clear()
            else:
                stale = {rtype} | ALSO_STALE.get(rtype, set())
                seen = {k for k in seen if k[0] not in stale}
        elif (rtype, r["method"], r["target"]) not in seen:
            seen.add((rtype, r["method"], r["target"]))
            floor += 1
    return floor


def set_latency(ms):
    status, _, body = Http(SANDBOX_PORT).request("PUT", "/_sandbox/faults", {"latency_ms": ms})
    if status not in (200, 204):
        raise RuntimeError(f"PUT /_sandbox/faults answered {status}: {body[:200]!r}")


# ---------------------------------------------------------------- load generator


class Oha:
    def __init__(self, path, workdir):
        self.path = path
        self.workdir = workdir

    def run(self, url, *, duration=None, requests=None, concurrency=32, rate=None,
            token=None):
        cmd = [self.path, "--no-tui", "--output-format", "json", "-c", str(concurrency)]
        if duration is not None:
            cmd += ["-z", f"{duration}s"]
        if requests is not None:
            cmd += ["-n", str(requests)]
        if rate is not None:
            cmd += ["-q", str(rate), "--latency-correction"]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        cmd.append(url)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr[:500]}")
        r = json.loads(out.stdout)
        codes = r.get("statusCodeDistribution", {})
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        total = sum(codes.values())
        errors = r.get("errorDistribution", {})
        pct = r.get("latencyPercentiles", {})
        return {
            "rps": r["summary"]["requestsPerSec"],
            "p50_ms": (pct.get("p50") or 0) * 1000,
            "p99_ms": (pct.get("p99") or 0) * 1000,
            "ok": ok,
            "total": total,
            "non_2xx": total - ok,
            # Requests still in flight when a -z run ends are reported as aborted by the
            # deadline: an artifact of stopping, not a failure of the target.
            "errors": sum(v for k, v in (errors or {}).items() if "deadline" not in k.lower()),
        }


def interleaved(oha, runs, targets, **kw):
    """Runs each target once per round, `runs` rounds, so that noise from the shared
    machine hits every target alike; returns the medians per target."""
    per = {name: [] for name in targets}
    for _ in range(runs):
        for name, (url, token) in targets.items():
            per[name].append(oha.run(url, token=token, **kw))
    out = {}
    for name, results in per.items():
        med = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms")}
        med["non_2xx"] = sum(r["non_2xx"] for r in results)
        med["errors"] = sum(r["errors"] for r in results)
        med["runs"] = [{k: round(r[k], 3) for k in ("rps", "p50_ms", "p99_ms")} for r in results]
        out[name] = med
    return out


# ---------------------------------------------------------------- configs


def gateway_config(path, port, audit, cache_enabled=True, extra_cache="", audit_extra="",
                   extra=""):
    text = f"""
[server]
listen = "{HOST}:{port}"

[log]
format = "text"
level = "warn"

[ehr]
profile = "generic-r4"

[portal]
payment_processor = "sandbox"

[upstream]
base_url = "http://{HOST}:{SANDBOX_PORT}/fhir"

[upstream.auth]
type = "client_credentials"
token_url = "http://{HOST}:{SANDBOX_PORT}/auth/token"
client_id = "portico-system"
client_secret_env = "PORTICO_UPSTREAM_CLIENT_SECRET"
scope = "system/*.read system/*.write"

[auth]
issuer = "http://{HOST}:{SANDBOX_PORT}/auth"

[audit]
path = "{audit}"
{audit_extra}

[login]
client_id = "portico-portal"
client_secret_env = "PORTICO_PORTAL_CLIENT_SECRET"

[cache]
enabled = {"true" if cache_enabled else "false"}
{extra_cache}
{extra}
"""
    with open(path, "w") as f:
        f.write(text)
    return path


NGINX_CONF = """
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    upstream sandbox {{
        server {host}:{sandbox};
        keepalive 64;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://sandbox;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""


# ---------------------------------------------------------------- scenarios


def portal_login(port, patient):
    """Logs `patient` in through the gateway's own login (authorization code at the
    sandbox, session cookie at the gateway). Returns a request function that carries the
    session's cookies, and the session's CSRF token."""
    c = Http(port)
    jar = {}

    def req(method, path, body=None, headers=None):
        h = dict(headers or {})
        if jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        status, headers_out, payload = c.request(method, path, body, h)
        for v in headers_out.get_all("Set-Cookie") or []:
            name, _, rest = v.partition("=")
            jar[name.strip()] = rest.split(";")[0]
        return status, headers_out, payload

    status, h, _ = req("GET", "/auth/login")
    if status != 303:
        raise RuntimeError(f"/auth/login answered {status}")
    authorize = urllib.parse.urlparse(h["Location"] + f"&login_hint={patient}")
    status, h, _ = Http(authorize.port).request("GET", f"{authorize.path}?{authorize.query}")
    if status != 302:
        raise RuntimeError(f"EHR authorize answered {status}")
    cb = urllib.parse.urlparse(h["Location"])
    status, _, _ = req("GET", f"{cb.path}?{cb.query}")
    if status != 303:
        raise RuntimeError(f"callback answered {status}")
    status, _, body = req("GET", "/auth/session")
    return req, json.loads(body)["csrf_token"]


def scenario_session(port, patient, rng_slot):
    """One scripted portal session through the gateway's own login (cookie + CSRF):
    login, dashboard, two record pages (lab results, medications), slots, book, dashboard,
    care team, new message
    thread, threads, dashboard. Returns the statuses seen."""
    statuses = []
    req, csrf = portal_login(port, patient)
    write = {"X-CSRF-Token": csrf, "Origin": f"http://{HOST}:{port}"}

    def get(path):
        status, _, body = req("GET", "/api/v1" + path)
        statuses.append(status)
        return json.loads(body) if status == 200 else None

    def post(path, body):
        status, _, out = req("POST", "/api/v1" + path, body,
                             dict(write, **{"Idempotency-Key": str(uuid.uuid4())}))
        statuses.append(status)
        return status

    get("/dashboard")
    get("/records/lab-results")
    get("/records/medications")
    slots = (get("/appointments/slots") or {}).get("slots") or []
    if slots:
        post("/appointments", {"slot_id": slots[rng_slot % len(slots)]["id"],
                               "reason": "Check-up"})
    get("/dashboard")
    team = (get("/records/care-team") or {}).get("items") or []
    members = [p["reference"] for t in team for p in t.get("people", [])
               if (p.get("reference") or "").startswith("Practitioner/")]
    if members:
        post("/messages/threads", {"recipient": members[0], "topic": "A question",
                                   "text": "Should I take it with food?"})
    get("/messages/threads")
    get("/dashboard")
    return statuses


def timed_logins(port, patients):
    """Milliseconds of each portal login (authorization code through the gateway, to a
    session cookie), one after the other."""
    out = []
    for patient in patients:
        c = Http(port)
        started = time.perf_counter()
        status, h, _ = c.request("GET", "/auth/login")
        jar = "; ".join(v.split(";")[0] for v in (h.get_all("Set-Cookie") or []))
        authorize = urllib.parse.urlparse(h["Location"] + f"&login_hint={patient}")
        status, h, _ = Http(authorize.port).request("GET",
                                                    f"{authorize.path}?{authorize.query}")
        cb = urllib.parse.urlparse(h["Location"])
        status, _, _ = c.request("GET", f"{cb.path}?{cb.query}", headers={"Cookie": jar})
        if status != 303:
            raise RuntimeError(f"login through {port} answered {status}")
        out.append((time.perf_counter() - started) * 1000)
    return out


def timed_writes(port, token, n):
    """Milliseconds of `n` keyed portal writes (a referral each), one after the other."""
    out = []
    c = Http(port)
    for _ in range(n):
        started = time.perf_counter()
        status, _, body = c.request(
            "POST", "/api/v1/referrals",
            {"specialty": "394579002", "reason": "benchmark"},
            {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())})
        if status != 201:
            raise RuntimeError(f"a referral through {port} answered {status}: {body[:200]!r}")
        out.append((time.perf_counter() - started) * 1000)
    return out


def run_sessions(port, patients, workers=8):
    sandbox_reset()
    start = time.monotonic()
    statuses = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        for result in ex.map(lambda ip: scenario_session(port, ip[1], ip[0]),
                             list(enumerate(patients))):
            for s in result:
                statuses[str(s)] = statuses.get(str(s), 0) + 1
    elapsed = time.monotonic() - start
    stats = sandbox_stats()
    return {"upstream_calls": fhir_calls(stats), "by_type": stats["by_method_and_type"],
            "portal_statuses": statuses, "seconds": round(elapsed, 1)}


def metrics_value(port, name):
    status, _, body = Http(port).request("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# ---------------------------------------------------------------- main


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 1048576, 1),
            "kernel": platform.release(), "loadavg_at_start": os.getloadavg()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--portico", required=True)
    ap.add_argument("--static", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--nginx")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--duration", type=int, help="seconds per load point")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--patients", type=int, help="sandbox size (scenario 6's patient count)")
    ap.add_argument("--sessions", type=int, help="scenario 5's simulated patients")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-ms", type=int, default=0,
                    help="upstream latency the sandbox adds to every answer, for every "
                         "scenario except 3 and 4 (which set 100 ms); default 0")
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7,8,9",
                    help="which scenarios to run, e.g. 1,3 (default: all)")
    args = ap.parse_args()
    wanted = {n.strip() for n in args.scenarios.split(",")}
    if not wanted or not wanted <= set("123456789"):
        ap.error(f"--scenarios takes numbers from 1 to 9, got {args.scenarios!r}")

    def want(n):
        return n in wanted

    smoke = args.smoke
    duration = args.duration or (1 if smoke else 8)
    runs = args.runs or (1 if smoke else 3)
    patients = args.patients or (60 if smoke else 10000)
    sessions = args.sessions or (10 if smoke else 1000)
    stampede = 100 if smoke else 1000
    conc = args.concurrency
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="portico-bench-")
    procs = Procs(workdir)
    oha = Oha(args.oha, workdir)
    results = {"mode": "smoke" if smoke else "full", "machine": machine(),
               "settings": {"duration_s": duration, "runs": runs, "patients": patients,
                            "sessions": sessions, "stampede": stampede,
                            "upstream_latency_ms": args.latency_ms,
                            "concurrency": conc},
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenarios": {}}
    S = results["scenarios"]
    try:
        # -- sandbox
        log(f"starting the sandbox with {patients} patients")
        sb = procs.start("sandbox", [args.portico, "sandbox", "--port", str(SANDBOX_PORT),
                                     "--patients", str(patients), "--seed", "42",
                                     "--latency-ms", str(args.latency_ms)])
        sandbox_ready = wait_ready(SANDBOX_PORT, "/fhir/metadata", 900, sb)
        secrets_ = {}
        deadline = time.monotonic() + 30
        while len(secrets_) < 2 and time.monotonic() < deadline:
            with open(os.path.join(workdir, "sandbox.log")) as f:
                for m in re.finditer(r"^\s+(portico-system|portico-portal)\s+secret (\S+)",
                                     f.read(), re.M):
                    secrets_[m.group(1)] = m.group(2)
            time.sleep(0.05)
        if len(secrets_) < 2:
            raise RuntimeError("the sandbox banner named no client secrets")
        gw_env = {"PORTICO_UPSTREAM_CLIENT_SECRET": secrets_["portico-system"],
                  "PORTICO_PORTAL_CLIENT_SECRET": secrets_["portico-portal"]}
        log(f"sandbox ready in {sandbox_ready:.1f}s")

        def start_gateway(name, port, **kw):
            cfg = gateway_config(os.path.join(workdir, f"{name}.toml"), port,
                                 os.path.join(workdir, f"{name}-audit.jsonl"), **kw)
            p = procs.start(name, [args.portico, "serve", "--config", cfg], gw_env)
            ready = wait_ready(port, "/readyz", 60, p)
            return p, ready

        # -- 7: start-up time (gateway to /readyz 200, median of 3; sandbox once)
        if want("7"):
            starts = []
            for i in range(3):
                p, ready = start_gateway("gw-start", GW_START_PORT)
                starts.append(ready)
                procs.stop(p)
            S["7_startup"] = {
                "gateway_to_ready_ms": round(statistics.median(starts) * 1000, 1),
                "gateway_runs_ms": [round(s * 1000, 1) for s in starts],
                "sandbox_to_ready_s": round(sandbox_ready, 2),
                "sandbox_patients": patients,
            }
            log(f"7 start-up: {S['7_startup']}")

        gw_cache, _ = start_gateway("gw-cache", GW_CACHE_PORT)
        gw_nocache, _ = start_gateway("gw-nocache", GW_NOCACHE_PORT, cache_enabled=False)
        token = patient_token(Http(SANDBOX_PORT), "pat-1")

        portal_path = "/api/v1/records/lab-results"
        facade_path = f"/fhir/Observation?patient=pat-1&{LAB_QUERY}"

        # -- 8: cached facade reads with each audit durability, side by side. Portico
        # has no audit-off mode; the reference is the lightest trail there is: durability
        # "async" into standard output (here the process log, never synced).
        if want("8"):
            variants = {
                "no_durable_trail": 'sinks = ["stdout"]\ndurability = "async"',
                "async": 'durability = "async"',
                "written": 'durability = "written"',
                "synced": 'durability = "synced"',
            }
            gws = {}
            for name, extra in variants.items():
                gws[name], _ = start_gateway(f"gw-audit-{name}", AUDIT_PORTS[name],
                                             audit_extra=extra)
            auth = {"Authorization": f"Bearer {token}"}
            for name in variants:
                status, _, body = Http(AUDIT_PORTS[name]).request("GET", facade_path,
                                                                  headers=auth)
                if status != 200:
                    raise RuntimeError(f"audit {name}: {facade_path} answered {status}")
            log("8 cached reads by audit durability")
            s8 = interleaved(oha, runs, {
                name: (f"http://{HOST}:{AUDIT_PORTS[name]}{facade_path}", token)
                for name in variants
            }, duration=duration, concurrency=conc)
            base = s8["no_durable_trail"]["rps"]
            S["8_audit_durability"] = {
                "results": s8,
                "ratios": {name: s8[name]["rps"] / base for name in variants},
                "fsyncs": {name: metrics_value(AUDIT_PORTS[name], "portico_audit_fsyncs_total")
                           for name in variants},
                "batches": {name: metrics_value(AUDIT_PORTS[name], "portico_audit_batches_total")
                            for name in variants},
                "records": {name: metrics_value(AUDIT_PORTS[name], "portico_audit_records_total")
                            for name in variants},
            }
            for p in gws.values():
                procs.stop(p)
            log(f"8: {S['8_audit_durability']['ratios']}")

        # -- 9: what sharing state through Redis costs: cached reads (checked against
        # the replica's mirror of the shared generations, which writes are pushed to),
        # logins and keyed writes, each next to the single-process gateway, side by side.
        if want("9"):
            redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
            rdir = os.path.join(workdir, "redis")
            os.makedirs(rdir, exist_ok=True)
            rs = procs.start("redis", [redis_bin, "--port", str(REDIS_PORT), "--bind", HOST,
                                       "--save", "", "--appendonly", "no", "--dir", rdir])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((HOST, REDIS_PORT), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            key_file = os.path.join(workdir, "redis-key")
            with open(key_file, "w") as f:
                f.write(secrets.token_hex(32))
            gw_redis, _ = start_gateway("gw-redis", GW_REDIS_PORT, extra=f"""
[redis]
url = "redis://{HOST}:{REDIS_PORT}/0"
key_prefix = "bench:"
encryption_key_file = "{key_file}"
""")
            auth = {"Authorization": f"Bearer {token}"}
            for port in (GW_CACHE_PORT, GW_REDIS_PORT):
                status, _, _ = Http(port).request("GET", facade_path, headers=auth)
                if status != 200:
                    raise RuntimeError(f"{port}: {facade_path} answered {status}")
            log("9 Redis-shared state vs single process")
            s9 = interleaved(oha, runs, {
                "single_process": (f"http://{HOST}:{GW_CACHE_PORT}{facade_path}", token),
                "redis_shared": (f"http://{HOST}:{GW_REDIS_PORT}{facade_path}", token),
            }, duration=duration, concurrency=conc)
            n = 5 if smoke else 30
            login_patients = [f"pat-{i}" for i in range(2, 2 + n)]
            portal_token = patient_token(Http(SANDBOX_PORT), "pat-1",
                                         scope="launch/patient openid fhirUser patient/*.rs "
                                               "patient/*.cu")
            logins = {"single_process": [], "redis_shared": []}
            writes = {"single_process": [], "redis_shared": []}
            for _ in range(runs):
                for name, port in (("single_process", GW_CACHE_PORT),
                                   ("redis_shared", GW_REDIS_PORT)):
                    logins[name] += timed_logins(port, login_patients)
                    writes[name] += timed_writes(port, portal_token, n)
            med = statistics.median
            S["9_redis"] = {
                "cached_reads": s9,
                "cached_read_ratio": s9["redis_shared"]["rps"] / s9["single_process"]["rps"],
                "login_ms": {k: round(med(v), 2) for k, v in logins.items()},
                "write_ms": {k: round(med(v), 2) for k, v in writes.items()},
                "shared_failures": metrics_value(GW_REDIS_PORT,
                                                 "portico_cache_shared_failures_total"),
            }
            procs.stop(gw_redis)
            procs.stop(rs)
            log(f"9: cached reads {S['9_redis']['cached_read_ratio']:.2f}x, "
                f"logins {S['9_redis']['login_ms']}, writes {S['9_redis']['write_ms']}")

        # -- 1: cached reads vs the static-bytes server
        if want("1"):
            auth = {"Authorization": f"Bearer {token}"}
            bodies = {}
            for name, port, path in (("portal", GW_CACHE_PORT, portal_path),
                                     ("facade", GW_CACHE_PORT, facade_path)):
                status, h, body = Http(port).request("GET", path, headers=auth)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
                fname = os.path.join(workdir, f"{name}-body.json")
                with open(fname, "wb") as f:
                    f.write(body)
                bodies[name] = (fname, h.get("Content-Type"), len(body))
            static_portal = procs.start("static-portal", [
                args.static, "--listen", f"{HOST}:{STATIC_PORTAL_PORT}", "--body",
                bodies["portal"][0], "--content-type", bodies["portal"][1]])
            static_facade = procs.start("static-facade", [
                args.static, "--listen", f"{HOST}:{STATIC_FACADE_PORT}", "--body",
                bodies["facade"][0], "--content-type", bodies["facade"][1]])
            wait_ready(STATIC_PORTAL_PORT, "/", 30, static_portal)
            wait_ready(STATIC_FACADE_PORT, "/", 30, static_facade)
            log("1 cached reads vs static bytes")
            gw = f"http://{HOST}:{GW_CACHE_PORT}"
            s1 = interleaved(oha, runs, {
                "portal_cached": (gw + portal_path, token),
                "static_portal_bytes": (f"http://{HOST}:{STATIC_PORTAL_PORT}{portal_path}", token),
                "facade_cached": (gw + facade_path, token),
                "static_facade_bytes": (f"http://{HOST}:{STATIC_FACADE_PORT}{facade_path}", token),
            }, duration=duration, concurrency=conc)
            S["1_cached_reads"] = {
                "body_bytes": {"portal": bodies["portal"][2], "facade": bodies["facade"][2]},
                "results": s1,
                "portal_ratio": s1["portal_cached"]["rps"] / s1["static_portal_bytes"]["rps"],
                "facade_ratio": s1["facade_cached"]["rps"] / s1["static_facade_bytes"]["rps"],
            }
            procs.stop(static_portal)
            procs.stop(static_facade)
            log(f"1: portal {S['1_cached_reads']['portal_ratio']:.2f}x, "
                f"facade {S['1_cached_reads']['facade_ratio']:.2f}x of static")

        # -- 2: pass-through (cache off) vs nginx vs direct
        if want("2"):
            targets = {
                "portico_nocache": (f"http://{HOST}:{GW_NOCACHE_PORT}{facade_path}", token),
                "direct_sandbox": (f"http://{HOST}:{SANDBOX_PORT}{facade_path}", token),
            }
            nginx = None
            if args.nginx:
                conf = os.path.join(workdir, "nginx.conf")
                with open(conf, "w") as f:
                    f.write(NGINX_CONF.format(dir=workdir, host=HOST, sandbox=SANDBOX_PORT,
                                              port=NGINX_PORT))
                nginx = procs.start("nginx", [args.nginx, "-c", conf, "-g", "daemon off;"])
                wait_ready(NGINX_PORT, "/fhir/metadata", 30, nginx)
                targets["nginx"] = (f"http://{HOST}:{NGINX_PORT}{facade_path}", token)
            log("2 pass-through at full load")
            full = interleaved(oha, runs, targets, duration=duration, concurrency=conc)
            rate = max(1, int(full["portico_nocache"]["rps"] / 2))
            log(f"2 pass-through at half of Portico's throughput ({rate}/s)")
            half = interleaved(oha, runs, targets, duration=duration, concurrency=conc,
                               rate=rate)
            s2 = {"full_load": full, "half_load_rate": rate, "half_load": half}
            d = half["direct_sandbox"]
            s2["added_ms_at_half_load"] = {
                name: {"p50": r["p50_ms"] - d["p50_ms"], "p99": r["p99_ms"] - d["p99_ms"]}
                for name, r in half.items() if name != "direct_sandbox"}
            s2["ratio_vs_direct"] = full["portico_nocache"]["rps"] / full["direct_sandbox"]["rps"]
            if "nginx" in full:
                s2["ratio_vs_nginx"] = full["portico_nocache"]["rps"] / full["nginx"]["rps"]
            else:
                s2["nginx"] = "not installed: skipped"
            S["2_pass_through"] = s2
            if nginx:
                procs.stop(nginx)
            log(f"2: {s2.get('ratio_vs_nginx')} x nginx, {s2['ratio_vs_direct']:.2f} x direct")

        # -- 3: dashboard with 100 ms upstream latency vs one upstream call
        # Scenario 3 reads pat-2 .. pat-(1+n3); scenario 4 a patient after them, cold.
        n3 = 3 if smoke else 15
        if want("3") or want("4"):
            set_latency(100)
            try:
                if want("3"):
                    log("3 dashboard at 100 ms upstream latency")
                    pats = [f"pat-{i}" for i in range(2, 2 + n3)]
                    toks = tokens_for(pats)
                    gwc = Http(GW_CACHE_PORT)
                    sbc = Http(SANDBOX_PORT)
                    cold, warm, one = [], [], []
                    for p in pats:
                        h = {"Authorization": f"Bearer {toks[p]}"}
                        t = time.monotonic()
                        status, _, body = gwc.request("GET", "/api/v1/dashboard", headers=h)
                        cold.append(time.monotonic() - t)
                        if status != 200:
                            raise RuntimeError(f"dashboard answered {status}: {body[:300]!r}")
                        t = time.monotonic()
                        gwc.request("GET", "/api/v1/dashboard", headers=h)
                        warm.append(time.monotonic() - t)
                        t = time.monotonic()
                        status, _, _ = sbc.request("GET", f"/fhir/Patient/{p}", headers=h)
                        one.append(time.monotonic() - t)
                    # The browser portal's home page, side by side: other patients (so
                    # it is cold too), each signed in through the gateway's login first.
                    hpats = [f"pat-{i}" for i in range(3 + n3, 3 + 2 * n3)]
                    cold_home, warm_home = [], []
                    for p in hpats:
                        req, _ = portal_login(GW_CACHE_PORT, p)
                        t = time.monotonic()
                        status, _, body = req("GET", "/")
                        cold_home.append(time.monotonic() - t)
                        if status != 200:
                            raise RuntimeError(f"home page answered {status}: {body[:300]!r}")
                        t = time.monotonic()
                        req("GET", "/")
                        warm_home.append(time.monotonic() - t)
                    med = lambda xs: round(statistics.median(xs) * 1000, 1)
                    S["3_dashboard_latency"] = {
                        "upstream_latency_ms": 100, "patients": n3,
                        "cold_dashboard_ms": med(cold),
                        "warm_dashboard_ms": med(warm),
                        "one_upstream_call_ms": med(one),
                        "ratio_cold": statistics.median(cold) / statistics.median(one),
                        "cold_home_ms": med(cold_home),
                        "warm_home_ms": med(warm_home),
                        "ratio_cold_home": statistics.median(cold_home) / statistics.median(one),
                    }
                    log(f"3: {S['3_dashboard_latency']}")

                # -- 4: stampede, with the same 100 ms latency
                if want("4"):
                    log(f"4 stampede: {stampede} concurrent identical cold reads")
                    victim = f"pat-{2 + n3}"
                    vt = patient_token(Http(SANDBOX_PORT), victim)
                    path = f"/fhir/Observation?patient={victim}&{LAB_QUERY}"
                    s4 = {}
                    for name, port in (("portico_cache", GW_CACHE_PORT),
                                       ("portico_nocache", GW_NOCACHE_PORT)):
                        sandbox_reset()
                        r = oha.run(f"http://{HOST}:{port}{path}", requests=stampede,
                                    concurrency=stampede, token=vt)
                        stats = sandbox_stats()
                        s4[name] = {"upstream_calls": fhir_calls(stats), "ok": r["ok"],
                                    "non_2xx": r["non_2xx"], "errors": r["errors"],
                                    "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}
                    S["4_stampede"] = s4
                    log(f"4: {s4}")
            finally:
                set_latency(args.latency_ms)

        # -- 5: scripted portal sessions, cache on vs off (the naive pass-through)
        if want("5"):
            log(f"5 portal sessions for {sessions} patients, cache on then off")
            first = 20
            on_pats = [f"pat-{i}" for i in range(first, first + sessions)]
            off_pats = [f"pat-{i}" for i in range(first + sessions, first + 2 * sessions)]
            if first + 2 * sessions > patients:
                raise RuntimeError("not enough sandbox patients for scenario 5")
            s5 = {"portico": run_sessions(GW_CACHE_PORT, on_pats),
                  "naive_pass_through": run_sessions(GW_NOCACHE_PORT, off_pats)}
            s5["ratio"] = s5["portico"]["upstream_calls"] / s5["naive_pass_through"]["upstream_calls"]
            s5["per_session"] = {k: s5[k]["upstream_calls"] / sessions
                                 for k in ("portico", "naive_pass_through")}
            # The floor: the same script for other patients, one session at a time
            # through the gateway with no cache, its requests read from the sandbox's log.
            sample = min(sessions, 25)
            floor_pats = [f"pat-{i}" for i in range(first + 2 * sessions,
                                                     first + 2 * sessions + sample)]
            if first + 2 * sessions + sample > patients:
                raise RuntimeError("not enough sandbox patients for scenario 5's floor")
            status, _, _ = Http(SANDBOX_PORT).request("PUT", "/_sandbox/requests",
                                                      {"record": True})
            if status != 200:
                raise RuntimeError(f"PUT /_sandbox/requests answered {status}")
            floors, naive = [], []
            for i, p in enumerate(floor_pats):
                sandbox_reset()
                scenario_session(GW_NOCACHE_PORT, p, i)
                reqs = sandbox_requests()
                floors.append(session_floor(reqs))
                naive.append(sum(1 for r in reqs if not r["target"].startswith("/fhir/metadata")))
            Http(SANDBOX_PORT).request("PUT", "/_sandbox/requests", {"record": False})
            floor = statistics.mean(floors)
            s5["floor"] = {"sessions": sample, "per_session": floor,
                           "naive_per_session": statistics.mean(naive),
                           "min": min(floors), "max": max(floors)}
            s5["ratio_to_floor"] = s5["per_session"]["portico"] / floor
            S["5_sessions"] = s5
            log(f"5: ratio {s5['ratio']:.2f}, per session {s5['per_session']}, "
                f"floor {floor:.1f} per session -> {s5['ratio_to_floor']:.2f}x the floor")
        procs.stop(gw_nocache)

        # -- 6: memory with N patients' records cached
        procs.stop(gw_cache)
        if want("6"):
            mem_paths = ["/fhir/Observation?patient={p}", "/fhir/Condition?patient={p}",
                         "/fhir/MedicationRequest?patient={p}",
                         "/fhir/AllergyIntolerance?patient={p}", "/fhir/Encounter?patient={p}"]
            mem_pats = [f"pat-{i}" for i in range(1, patients + 1)]
            mem_tokens = {}

            def read_all(p):
                tok = mem_tokens[p]
                c = thread_client(GW_MEM_PORT)
                n = 0
                for tmpl in mem_paths:
                    status, _, body = c.request("GET", tmpl.format(p=p),
                                                headers={"Authorization": f"Bearer {tok}"})
                    if status != 200:
                        raise RuntimeError(f"{tmpl} for {p}: {status}")
                    n += len(body)
                return n

            def memory_run(name, extra):
                """Warms every patient's searches once (misses), then reads them all
                again (one hit each); RSS after each pass, relative to the JSON bytes."""
                # Fresh tokens for each gateway, minted before the timed passes (at
                # 100 000 patients a pass takes minutes; tokens live an hour).
                log(f"6 memory ({name}): minting {patients} patient tokens")
                mem_tokens.update(tokens_for(mem_pats))
                log(f"6 memory ({name}): warming {patients} patients")
                gw_mem, _ = start_gateway(f"gw-mem-{name}", GW_MEM_PORT, extra_cache=(
                    'max_bytes = 17179869184\npatient_ttl = "1h"\nreference_ttl = "1h"'
                    + extra))
                Http(GW_MEM_PORT).request(
                    "GET", "/fhir/Patient/pat-1",
                    headers={"Authorization": f"Bearer {mem_tokens['pat-1']}"})
                time.sleep(0.5)
                rss_before = rss_kib(gw_mem.pid)
                t = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(8) as ex:
                    json_bytes = sum(ex.map(read_all, mem_pats))
                warm_s = time.monotonic() - t
                time.sleep(1)
                rss_after = rss_kib(gw_mem.pid)
                gauge = metrics_value(GW_MEM_PORT, "portico_cache_bytes")
                entries = metrics_value(GW_MEM_PORT, "portico_cache_entries")
                with concurrent.futures.ThreadPoolExecutor(8) as ex:
                    hit_bytes = sum(ex.map(read_all, mem_pats))
                time.sleep(1)
                rss_hit = rss_kib(gw_mem.pid)
                procs.stop(gw_mem)
                if hit_bytes != json_bytes:
                    log(f"6 ({name}): hits answered {hit_bytes} bytes, misses {json_bytes}")
                delta = (rss_after - rss_before) * 1024
                delta_hit = (rss_hit - rss_before) * 1024
                return {
                    "warm_seconds": round(warm_s, 1),
                    "rss_before_mib": round(rss_before / 1024, 1),
                    "rss_after_mib": round(rss_after / 1024, 1),
                    "rss_delta_per_patient_kib": round(delta / patients / 1024, 1),
                    "json_bytes": json_bytes,
                    "cache_gauge_mib": round((gauge or 0) / 1048576, 1),
                    "cache_entries": entries or 0,
                    "rss_delta_over_json": delta / json_bytes if json_bytes else None,
                    "gauge_over_json": (gauge or 0) / json_bytes if json_bytes else None,
                    "rss_after_hit_mib": round(rss_hit / 1024, 1),
                    "rss_after_hit_over_json": delta_hit / json_bytes if json_bytes else None,
                }

            variants = {"compressed": memory_run("compressed", ""),
                        "uncompressed": memory_run("uncompressed", "\ncompress = false")}
            json_bytes = variants["compressed"]["json_bytes"]
            S["6_memory"] = {
                "patients": patients, "requests_per_patient": len(mem_paths),
                "json_bytes_mib": round(json_bytes / 1048576, 1),
                "json_bytes_per_patient_kib": round(json_bytes / patients / 1024, 1),
                **variants,
            }
            log(f"6: {S['6_memory']}")
    finally:
        procs.stop_all()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))
    # Every scenario asked for must have produced its figures (a smoke run in CI fails
    # here when the script has rotted, whatever the figures are).
    produced = {k.split("_", 1)[0] for k in S}
    missing = sorted(wanted - produced)
    if missing:
        sys.exit(f"run.py: no results for scenario(s) {', '.join(missing)}")


def markdown(r):
    S = r["scenarios"]
    m = r["machine"]
    st = r["settings"]
    out = [f"# Portico benchmark results ({r['mode']})", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
           f"Linux {m['kernel']}; load average at start {m['loadavg_at_start'][0]:.2f}. "
           f"Load generator (oha), gateway, sandbox and references share these cores.", "",
           f"Settings: {st['duration_s']} s per load point, {st['runs']} interleaved runs "
           f"(medians), {st['concurrency']} connections, sandbox with {st['patients']} "
           f"patients and {st.get('upstream_latency_ms', 0)} ms added upstream latency "
           f"(100 ms in scenarios 3 and 4); started {r['started']}, "
           f"finished {r.get('finished')}.", ""]

    def row(name, x):
        return (f"| {name} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                f"{x['non_2xx'] + x['errors']} |")

    if "1_cached_reads" in S:
        s = S["1_cached_reads"]
        out += ["## 1. Cached reads vs static bytes", "",
                "| target | req/s | p50 ms | p99 ms | failed |", "|---|---:|---:|---:|---:|"]
        out += [row(k, v) for k, v in s["results"].items()]
        out += ["", f"Portal lab-results ({s['body_bytes']['portal']} B): "
                f"**{s['portal_ratio']:.2f}×** the static server; facade Observation search "
                f"({s['body_bytes']['facade']} B): **{s['facade_ratio']:.2f}×**. Goal ≥ 0.7×.", ""]
    if "2_pass_through" in S:
        s = S["2_pass_through"]
        out += ["## 2. Pass-through (cache off) vs nginx vs direct", "",
                "Full load:", "", "| target | req/s | p50 ms | p99 ms | failed |",
                "|---|---:|---:|---:|---:|"]
        out += [row(k, v) for k, v in s["full_load"].items()]
        out += ["", f"At half of Portico's throughput ({s['half_load_rate']} req/s, "
                "latency-corrected):", "", "| target | req/s | p50 ms | p99 ms | failed |",
                "|---|---:|---:|---:|---:|"]
        out += [row(k, v) for k, v in s["half_load"].items()]
        out += [""]
        if "ratio_vs_nginx" in s:
            out.append(f"Throughput: **{s['ratio_vs_nginx']:.2f}×** nginx (goal ≥ 1.0×), "
                       f"{s['ratio_vs_direct']:.2f}× direct.")
        else:
            out.append(f"nginx: {s.get('nginx')}. Throughput {s['ratio_vs_direct']:.2f}× direct.")
        for name, a in s["added_ms_at_half_load"].items():
            out.append(f"- added over direct at half load, {name}: p50 {a['p50']:+.2f} ms, "
                       f"p99 **{a['p99']:+.2f} ms** (goal ≤ 1 ms for Portico)")
        out.append("")
    if "3_dashboard_latency" in S:
        s = S["3_dashboard_latency"]
        out += ["## 3. Dashboard at 100 ms upstream latency", "",
                f"Median over {s['patients']} patients: cold dashboard "
                f"{s['cold_dashboard_ms']} ms, one upstream call {s['one_upstream_call_ms']} ms "
                f"→ **{s['ratio_cold']:.2f}×** (goal ≤ 1.2×); the same dashboard again "
                f"(cached) {s['warm_dashboard_ms']} ms.", ""]
        if "cold_home_ms" in s:
            out += ["The browser portal's home page (`/`, signed in, other patients so that "
                    f"it is cold too): cold {s['cold_home_ms']} ms → "
                    f"**{s['ratio_cold_home']:.2f}×** one upstream call (goal ≤ 1.1×); "
                    f"warm **{s['warm_home_ms']} ms** (goal ≤ 5 ms).", ""]
    if "4_stampede" in S:
        s = S["4_stampede"]
        out += ["## 4. Stampede", "", f"{st['stampede']} concurrent identical cold reads "
                "(100 ms upstream latency):", "",
                "| gateway | upstream calls | 2xx | failed | p50 ms | p99 ms |",
                "|---|---:|---:|---:|---:|---:|"]
        for k, v in s.items():
            out.append(f"| {k} | **{v['upstream_calls']}** | {v['ok']} | "
                       f"{v['non_2xx'] + v['errors']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |")
        out += ["", "Goal: 1 upstream call with the cache.", ""]
    if "5_sessions" in S:
        s = S["5_sessions"]
        out += ["## 5. Scripted portal sessions", "",
                f"{st['sessions']} patients each: login, dashboard, lab results, medications, "
                "slots, book, dashboard, care team, new message thread, threads, dashboard.", "",
                "| gateway | upstream FHIR calls | per session | portal statuses | seconds |",
                "|---|---:|---:|---|---:|"]
        for k in ("portico", "naive_pass_through"):
            v = s[k]
            out.append(f"| {k} | {v['upstream_calls']} | {s['per_session'][k]:.1f} | "
                       f"{json.dumps(v['portal_statuses'])} | {v['seconds']} |")
        f = s["floor"]
        out += ["", f"The floor (each distinct EHR read once, every write, and the re-reads "
                f"the session's own writes make necessary), from {f['sessions']} more "
                f"sessions run one at a time through the gateway with no cache: "
                f"**{f['per_session']:.1f}** requests per session (from {f['min']} to "
                f"{f['max']}; that gateway made {f['naive_per_session']:.1f}).", "",
                f"Portico **{s['ratio_to_floor']:.2f}×** the floor (goal ≤ 1.15×); "
                f"{s['ratio']:.2f}× the gateway with no cache.", ""]
    if "6_memory" in S:
        s = S["6_memory"]
        out += ["## 6. Memory", "",
                f"{s['patients']} patients × {s['requests_per_patient']} facade searches "
                f"cached: JSON bytes {s['json_bytes_mib']} MiB "
                f"({s['json_bytes_per_patient_kib']} KiB per patient). Each gateway reads "
                "every search once (misses, stored), then once more (one hit each, after "
                "which the facade keeps its rendered answer in the entry). RSS growth "
                "over the gateway's RSS before the first pass:", "",
                "| cache bodies | entries | warm s | RSS after one read | per patient KiB "
                "| **RSS / JSON** | gauge / JSON | RSS after one hit each | RSS / JSON |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        def times(x):
            return "—" if x is None else f"{x:.2f}×"
        for k in ("compressed", "uncompressed"):
            v = s[k]
            out.append(
                f"| {k} | {v['cache_entries']:.0f} | {v['warm_seconds']} | "
                f"{v['rss_before_mib']} → {v['rss_after_mib']} MiB | "
                f"{v['rss_delta_per_patient_kib']} | **{times(v['rss_delta_over_json'])}** | "
                f"{times(v['gauge_over_json'])} | {v['rss_after_hit_mib']} MiB | "
                f"{times(v['rss_after_hit_over_json'])} |")
        out += ["", "Goals: RSS / JSON ≤ 1.3× with the entries cached (first round); ≤ 0.5× after one "
                "hit on every entry (fourth round).", ""]
    if "8_audit_durability" in S:
        s = S["8_audit_durability"]
        out += ["## 8. Cached reads by audit durability", "",
                "The facade's cached lab search, one gateway per `[audit] durability`, "
                "interleaved. Portico has no audit-off mode; the reference is the lightest "
                "trail there is (`async` to standard output, never synced).", "",
                "| durability | req/s | p50 ms | p99 ms | failed | × reference | records "
                "| batches | fsyncs |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k, v in s["results"].items():
            out.append(f"{row(k, v)} **{s['ratios'][k]:.3f}×** | "
                       f"{s['records'][k]:.0f} | {s['batches'][k]:.0f} | {s['fsyncs'][k]:.0f} |")
        out += ["", "Goals: `written` (the default) costs ≤ 5 % of the reference's "
                "throughput, `synced` ≤ 15 %.", ""]
    if "9_redis" in S:
        s = S["9_redis"]
        out += ["## 9. State shared through Redis vs one process", "",
                "The facade's cached lab search on a gateway sharing state through a local "
                "`redis-server` (every cacheable read checks the replica's mirror of the "
                "shared generations, which each write is pushed to and waits for) and on "
                "the single-process gateway, interleaved:", "",
                "| gateway | req/s | p50 ms | p99 ms | failed |", "|---|---:|---:|---:|---:|"]
        out += [row(k, v) for k, v in s["cached_reads"].items()]
        out += ["", f"Cached reads with Redis: **{s['cached_read_ratio']:.2f}×** the single "
                "process (goal ≥ 0.8×). Medians, one after the other: a portal login "
                f"{s['login_ms']['redis_shared']} ms with Redis vs "
                f"{s['login_ms']['single_process']} ms without; a keyed portal write "
                f"{s['write_ms']['redis_shared']} ms vs {s['write_ms']['single_process']} ms. "
                f"Shared-store failures during the run: {s['shared_failures']}.", ""]
    if "7_startup" in S:
        s = S["7_startup"]
        out += ["## 7. Start-up", "",
                f"Gateway `portico serve` to `/readyz` 200: **{s['gateway_to_ready_ms']} ms** "
                f"(median of {s['gateway_runs_ms']}); sandbox with {s['sandbox_patients']} "
                f"patients to `metadata` 200: {s['sandbox_to_ready_s']} s.", ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
