"""What the fleet tests share: the fleet's state file, HTTP with and without a cookie jar,
logins (the gateway's own, and SMART tokens from the sandbox), the sandbox's fault knobs
and request counters, and the EHR's state read with the gateway's own system client.

Standard library only.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET_SH = os.path.join(ROOT, "scripts", "fleet.sh")
TIMEOUT = 20
SESSION_COOKIE = "portico_session"
# What the portal login asks for; a bearer token with these scopes works on /api/v1 too.
PORTAL_SCOPE = "openid fhirUser launch/patient patient/*.rs patient/*.cud"
READ_SCOPE = "launch/patient openid fhirUser patient/*.rs"


class CheckFailed(AssertionError):
    pass


def expect(condition, what):
    if not condition:
        raise CheckFailed(what)
    print(f"    ok: {what}", flush=True)


def note(what):
    print(f"    .. {what}", flush=True)


class Reply:
    def __init__(self, status, headers, text, elapsed):
        self.status = status
        self.headers = headers
        self.text = text
        self.elapsed = elapsed

    @property
    def json(self):
        try:
            return json.loads(self.text) if self.text else None
        except ValueError:
            return None

    @property
    def code(self):
        body = self.json
        return body.get("code") if isinstance(body, dict) else None

    @property
    def location(self):
        return self.headers.get("Location")

    def brief(self):
        return f"{self.status} {self.text[:300]}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method, url, body=None, headers=None, timeout=TIMEOUT, form=None):
    """One request, no redirects followed; any status is returned, not raised."""
    headers = dict(headers or {})
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    started = time.monotonic()
    try:
        resp = _opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        resp = e
    text = resp.read().decode("utf-8", "replace")
    return Reply(resp.status, resp.headers, text, time.monotonic() - started)


class Browser:
    """One cookie jar for the site (the public URL), whichever replica answers; the
    sandbox's authorization server gets no gateway cookies."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.jar = {}
        self.csrf = None

    def send(self, method, url, body=None, headers=None):
        headers = dict(headers or {})
        to_gateway = not url.startswith(self.fleet.ehr)
        if to_gateway and self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        reply = http(method, url, body, headers)
        if to_gateway:
            for line in reply.headers.get_all("Set-Cookie") or []:
                name, _, value = line.split(";", 1)[0].partition("=")
                if not value or "Max-Age=0" in line:
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = value
        return reply

    def get(self, url):
        return self.send("GET", url)

    def login(self, start, finish, patient):
        """`/auth/login` on replica `start`, the sandbox approves `patient` (login_hint),
        its redirect to the public URL's callback lands on replica `finish`. Returns the
        callback's reply (or /auth/login's, when that does not redirect)."""
        reply = self.get(f"{start}/auth/login")
        if reply.status != 303:
            return reply
        reply = self.get(f"{reply.location}&login_hint={urllib.parse.quote(patient)}")
        if reply.status not in (302, 303):
            raise CheckFailed(f"the sandbox did not approve the login: {reply.brief()}")
        callback = reply.location
        if not callback.startswith(f"{self.fleet.public}/auth/callback"):
            raise CheckFailed(f"the callback is not at the public URL: {callback}")
        return self.get(self.fleet.on(finish, callback))

    def sign_in(self, start, finish, patient):
        """A full login that must succeed; keeps the CSRF token."""
        reply = self.login(start, finish, patient)
        if reply.status != 303:
            raise CheckFailed(f"the callback did not open a session: {reply.brief()}")
        session = self.get(f"{finish}/auth/session")
        if session.status != 200:
            raise CheckFailed(f"no session after login: {session.brief()}")
        self.csrf = session.json["csrf_token"]
        return session.json

    def post(self, base, path, body, key=None):
        headers = {"X-CSRF-Token": self.csrf or "", "Origin": self.fleet.public}
        if key:
            headers["Idempotency-Key"] = key
        return self.send("POST", f"{base}{path}", body, headers)


class Fleet:
    """A detached fleet started by scripts/fleet.sh, as its state file describes it."""

    def __init__(self, state_path):
        self.state_path = state_path
        self.reload()
        self._system_token = None

    def reload(self):
        values = {}
        with open(self.state_path) as f:
            for line in f:
                m = re.match(r'^([A-Z_]+)="?(.*?)"?$', line.strip())
                if m:
                    values[m.group(1)] = m.group(2)
        self.state = values
        self.public = values["PUBLIC_URL"]
        self.lb = self.public
        self.replicas = [f"http://127.0.0.1:{p}" for p in values["GW_PORTS"].split()]
        self.gw_pids = values["GW_PIDS"].split()
        self.ehr = f"http://127.0.0.1:{values['EHR_PORT']}"
        self.work = values["WORK"]
        self.cursor_key_file = values["CURSOR_KEY_FILE"]

    def on(self, replica, url):
        """`url` (at the public URL) sent to one replica instead of the balancer."""
        if not url.startswith(self.public):
            raise CheckFailed(f"{url} is not at the public URL {self.public}")
        return replica + url[len(self.public):]

    def script(self, *args):
        out = subprocess.run([FLEET_SH, *args, "--state", self.state_path], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise CheckFailed(f"fleet.sh {' '.join(args)} failed: {out.stdout}{out.stderr}")
        self.reload()
        return out.stdout.strip()

    # -- the sandbox

    def secret(self, client):
        with open(os.path.join(self.work, "sandbox.log")) as f:
            m = re.search(rf"^\s+{re.escape(client)}\s+secret (\S+)", f.read(), re.M)
        if not m:
            raise CheckFailed(f"no secret for {client} in the sandbox's banner")
        return m.group(1)

    def system_token(self):
        """The gateway's own system client (client credentials), to read the EHR as it is."""
        if self._system_token is None:
            basic = base64.b64encode(f"portico-system:{self.secret('portico-system')}".encode()).decode()
            reply = http("POST", f"{self.ehr}/auth/token",
                         form={"grant_type": "client_credentials", "scope": "system/*.read"},
                         headers={"Authorization": f"Basic {basic}"})
            if reply.status != 200:
                raise CheckFailed(f"no system token from the sandbox: {reply.brief()}")
            self._system_token = reply.json["access_token"]
        return self._system_token

    def ehr_search(self, query):
        """Every resource the EHR holds for `Type?params` (all pages)."""
        url = f"{self.ehr}/fhir/{query}"
        found = []
        while url:
            reply = http("GET", url, headers={"Authorization": f"Bearer {self.system_token()}",
                                              "Accept": "application/fhir+json"})
            if reply.status != 200:
                raise CheckFailed(f"EHR search {query}: {reply.brief()}")
            bundle = reply.json
            found += [e["resource"] for e in bundle.get("entry", [])
                      if e.get("search", {}).get("mode", "match") == "match"]
            url = next((l["url"] for l in bundle.get("link", []) if l["relation"] == "next"), None)
        return found

    def appointments_holding(self, slot_id):
        """The EHR's appointments on a slot that hold it (not cancelled)."""
        return [a for a in self.ehr_search(f"Appointment?slot=Slot/{slot_id}&_count=100")
                if a.get("status") not in ("cancelled", "entered-in-error", "noshow")]

    def ehr_read(self, rtype, rid):
        reply = http("GET", f"{self.ehr}/fhir/{rtype}/{rid}",
                     headers={"Authorization": f"Bearer {self.system_token()}"})
        if reply.status != 200:
            raise CheckFailed(f"EHR read {rtype}/{rid}: {reply.brief()}")
        return reply.json

    def faults(self, **config):
        """Replaces the sandbox's fault knobs (`PUT /_sandbox/faults`); returns the reply."""
        return http("PUT", f"{self.ehr}/_sandbox/faults", config)

    def clear_faults(self):
        reply = self.faults()
        if reply.status != 200:
            raise CheckFailed(f"cannot clear the sandbox's faults: {reply.brief()}")

    def ehr_requests(self, method, resource_type):
        stats = http("GET", f"{self.ehr}/_sandbox/stats").json
        return sum(c["count"] for c in stats["by_method_and_type"]
                   if c["method"] == method and c["resource_type"] == resource_type)

    def patient_token(self, patient, scope=PORTAL_SCOPE):
        """A SMART access token for `patient` (public client demo-app, authorization code +
        PKCE S256, auto-approved with login_hint), for the fleet's public FHIR base."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect_uri = "http://127.0.0.1:9/callback"
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": "demo-app", "redirect_uri": redirect_uri,
            "scope": scope, "state": "s", "aud": f"{self.public}/fhir",
            "code_challenge": challenge, "code_challenge_method": "S256", "login_hint": patient,
        })
        reply = http("GET", f"{self.ehr}/auth/authorize?{query}")
        if reply.status not in (302, 303):
            raise CheckFailed(f"authorize for {patient}: {reply.brief()}")
        code = urllib.parse.parse_qs(urllib.parse.urlparse(reply.location).query)["code"][0]
        reply = http("POST", f"{self.ehr}/auth/token", form={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": "demo-app", "code_verifier": verifier})
        if reply.status != 200:
            raise CheckFailed(f"token for {patient}: {reply.brief()}")
        return reply.json["access_token"]


def bearer(token, extra=None):
    headers = {"Authorization": f"Bearer {token}"}
    headers.update(extra or {})
    return headers


def free_slots(base, token, **params):
    query = urllib.parse.urlencode(params)
    reply = http("GET", f"{base}/api/v1/appointments/slots?{query}", headers=bearer(token))
    if reply.status != 200:
        raise CheckFailed(f"slot search: {reply.brief()}")
    return [s["id"] for s in reply.json["slots"]]


def breaker_state(base):
    reply = http("GET", f"{base}/readyz")
    try:
        return reply.json["checks"]["upstream_breaker"]["state"]
    except (TypeError, KeyError):
        return f"unknown ({reply.status})"


def settle(fleet, patient="pat-50", seconds=30):
    """Waits until every replica's circuit breaker toward the EHR is closed again after a
    check that injected faults (each replica's breaker is its own; a half-open one closes
    on its next successful EHR call, so one is made: a search the cache has not seen)."""
    token = fleet.patient_token(patient, READ_SCOPE)
    deadline = time.monotonic() + seconds
    for base in fleet.replicas:
        while (state := breaker_state(base)) != "closed":
            if time.monotonic() > deadline:
                raise CheckFailed(f"the breaker of {base} is still {state} after {seconds}s")
            if state == "half_open":
                http("GET", f"{base}/fhir/Observation?patient={patient}"
                            f"&_count={secrets.randbelow(90) + 5}", headers=bearer(token))
            time.sleep(0.25)
