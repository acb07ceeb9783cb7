#!/usr/bin/env python3
"""A long search answer through two gateway builds with their cache off (say, one that
streams long answers and one that buffers them), beside nginx proxying the same EHR.

The sandbox's patients have no answer longer than about 20 kB, so the EHR here is a small
Python server that answers `Observation` searches with a fixed long Bundle (one entry in
50 another patient's) and forwards everything else to the sandbox (tokens, metadata).
Prints, for each build: throughput and latency at the given concurrencies (three
interleaved runs each, medians, with nginx), CPU time per request (sequential, one
kept-alive connection), time to the first byte and to the last (sequential, new
connections), and the peak RSS. Not part of scripts/bench.sh: docs/BENCHMARKS.md says
when it was run.

    python3 scripts/bench/long_answer.py OLD_BINARY NEW_BINARY OHA NGINX [BYTES [SECONDS]]

Environment: CONCS (default "4,16")."""
import http.client
import http.server
import importlib.util
import json
import os
import re
import shutil
import socketserver
import statistics
import sys
import tempfile
import threading
import time

spec = importlib.util.spec_from_file_location(
    "run", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

OLD, NEW, OHA, NGINX = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
SIZE = int(sys.argv[5]) if len(sys.argv) > 5 else 1_000_000
DURATION = int(sys.argv[6]) if len(sys.argv) > 6 else 8
HOST = run.HOST
EHR_PORT = 18095
SB = run.SANDBOX_PORT
EHR_BASE = f"http://{HOST}:{EHR_PORT}/fhir"


def bundle(size):
    entries = []
    n = 0
    total = 0
    while total < size:
        patient = "pat-2" if n % 50 == 49 else "pat-1"
        e = json.dumps({"fullUrl": f"{EHR_BASE}/Observation/o{n}", "resource": {
            "resourceType": "Observation", "id": f"o{n}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucose"},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-01-02T10:00:00Z",
            "valueQuantity": {"value": 5.4 + n % 7, "unit": "mmol/L"},
            "note": [{"text": "lab result " * 20}]}, "search": {"mode": "match"}})
        entries.append(e)
        total += len(e) + 1
        n += 1
    head = json.dumps({"resourceType": "Bundle", "type": "searchset", "total": n,
                       "link": [{"relation": "self", "url": f"{EHR_BASE}/Observation?patient=pat-1"},
                                {"relation": "next", "url": f"{EHR_BASE}/Observation?patient=pat-1&page=2"}]})
    return (head[:-1] + ',"entry":[' + ",".join(entries) + "]}").encode(), n


BODY, N = bundle(SIZE)


class Ehr(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/fhir/Observation?") or self.path == "/fhir/Observation":
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
            return
        self.forward("GET")

    def do_POST(self):
        self.forward("POST")

    def forward(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        c = http.client.HTTPConnection(HOST, SB, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request(method, self.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # A load generator stopping mid-answer resets its connections: not news.
        pass


def ttfb(port, path, token, n=15):
    firsts, totals = [], []
    for _ in range(n):
        c = http.client.HTTPConnection(HOST, port, timeout=30)
        t = time.monotonic()
        c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        r.read(1)
        firsts.append(time.monotonic() - t)
        rest = r.read()
        totals.append(time.monotonic() - t)
        assert r.status == 200, (r.status, rest[:200])
        c.close()
    return round(statistics.median(firsts) * 1000, 2), round(statistics.median(totals) * 1000, 2)


def cpu_per_request(pid, port, token, path, n=300):
    def cpu():
        fields = open(f"/proc/{pid}/stat").read().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    c = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(20):
        c.request("GET", path, headers=headers)
        c.getresponse().read()
    before = cpu()
    for _ in range(n):
        c.request("GET", path, headers=headers)
        c.getresponse().read()
    return round(1000 * (cpu() - before) / n, 2)


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])


def main():
    workdir = tempfile.mkdtemp(prefix="portico-longbench-")
    procs = run.Procs(workdir)
    ehr = Server((HOST, EHR_PORT), Ehr)
    threading.Thread(target=ehr.serve_forever, daemon=True).start()
    try:
        sb = procs.start("sandbox", [NEW, "sandbox", "--port", str(SB), "--patients", "50"])
        run.wait_ready(SB, "/fhir/metadata", 60, sb)
        secrets = {}
        while len(secrets) < 2:
            with open(os.path.join(workdir, "sandbox.log")) as f:
                for m in re.finditer(r"^\s+(portico-system|portico-portal)\s+secret (\S+)", f.read(), re.M):
                    secrets[m.group(1)] = m.group(2)
            time.sleep(0.05)
        env = {"PORTICO_UPSTREAM_CLIENT_SECRET": secrets["portico-system"],
               "PORTICO_PORTAL_CLIENT_SECRET": secrets["portico-portal"]}
        token = run.patient_token(run.thread_client(SB), "pat-1")
        gws = {}
        for name, binary, port in [("old", OLD, 18081), ("new", NEW, 18082)]:
            cfg = run.gateway_config(os.path.join(workdir, f"{name}.toml"), port,
                                     os.path.join(workdir, f"{name}-audit.jsonl"), cache_enabled=False)
            text = open(cfg).read()
            text = text.replace(f'[upstream]\nbase_url = "http://{HOST}:{SB}/fhir"', f'[upstream]\nbase_url = "{EHR_BASE}"')
            text = text.replace(f'issuer = "http://{HOST}:{SB}/auth"', f'issuer = "http://{HOST}:{SB}/auth"\naudiences = ["http://{HOST}:{SB}/fhir"]')
            open(cfg, "w").write(text)
            p = procs.start(name, [binary, "serve", "--config", cfg], env)
            run.wait_ready(port, "/readyz", 60, p)
            gws[name] = (p, port)
        conf = os.path.join(workdir, "nginx.conf")
        open(conf, "w").write(run.NGINX_CONF.format(dir=workdir, host=HOST, sandbox=EHR_PORT, port=run.NGINX_PORT))
        nginx = procs.start("nginx", [NGINX, "-c", conf, "-g", "daemon off;"])
        time.sleep(1)
        path = "/fhir/Observation?category=laboratory"
        # Sanity: the same entries from both gateways, none of pat-2's.
        outs = {}
        for name, (_, port) in gws.items():
            c = http.client.HTTPConnection(HOST, port, timeout=30)
            c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            r = c.getresponse()
            data = r.read()
            assert r.status == 200, (name, r.status, data[:300])
            b = json.loads(data)
            outs[name] = ([e["resource"]["id"] for e in b["entry"]], r.getheader("Content-Length"))
            assert b"pat-2" not in data
        assert outs["old"][0] == outs["new"][0]
        print("body", len(BODY), "entries", N, "kept", len(outs["new"][0]),
              "content-length old/new", outs["old"][1], outs["new"][1], flush=True)
        for name, (p, port) in gws.items():
            print(name, "CPU ms a request (sequential)", cpu_per_request(p.pid, port, token, path),
                  flush=True)
        oha = run.Oha(OHA, workdir)
        targets = {name: (f"http://{HOST}:{port}{path}", token) for name, (_, port) in gws.items()}
        targets["nginx"] = (f"http://{HOST}:{run.NGINX_PORT}{path}", token)
        for conc in [int(c) for c in os.environ.get("CONCS", "4,16").split(",")]:
            full = run.interleaved(oha, 3, targets, duration=DURATION, concurrency=conc)
            print("concurrency", conc, json.dumps({k: {m: round(v[m], 2) for m in ("rps", "p50_ms", "p99_ms")} for k, v in full.items()}), flush=True)
        for name, (p, port) in gws.items():
            print(name, "ttfb/total ms", ttfb(port, path, token), "VmHWM KiB", hwm_kib(p.pid), flush=True)
    finally:
        procs.stop_all()
        ehr.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


main()
