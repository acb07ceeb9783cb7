#!/usr/bin/env python3
"""Log in to the sandbox EHR as a demo patient with a real SMART authorization-code +
PKCE (S256) flow, then read the patient and their lab results.

Standard library only. Used by the README, by `portico demo`'s banner, and by CI as a
smoke test of the demo command.

    python3 scripts/smart-login.py --ehr http://127.0.0.1:8090 --patient pat-1 \
        [--gateway http://127.0.0.1:8080] [--scope "launch/patient patient/*.rs openid fhirUser"]
"""

import argparse
import base64
import hashlib
import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def get_json(url, token=None):
    req = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.load(resp)


def fail(message):
    print(f"smart-login: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ehr", default="http://127.0.0.1:8090", help="sandbox base URL")
    ap.add_argument("--patient", help="patient id (default: the first from /auth/patients)")
    ap.add_argument("--gateway", help="also check the gateway's /healthz and /readyz")
    ap.add_argument("--fhir", help="FHIR base to read from (default: the sandbox's; e.g. the gateway's /fhir)")
    ap.add_argument("--client-id", default="demo-app")
    ap.add_argument("--scope", default="launch/patient openid fhirUser patient/*.rs")
    args = ap.parse_args()

    fhir = args.fhir or f"{args.ehr}/fhir"
    _, smart = get_json(f"{fhir}/.well-known/smart-configuration")
    if "S256" not in smart.get("code_challenge_methods_supported", []):
        fail("the server does not advertise PKCE S256")
    patient = args.patient
    if not patient:
        _, patients = get_json(f"{args.ehr}/auth/patients")
        patient = patients[0]["id"]

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    redirect_uri = "http://127.0.0.1:9/callback"  # never contacted: the code is read from Location
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": args.client_id, "redirect_uri": redirect_uri,
        "scope": args.scope, "state": state, "aud": fhir, "code_challenge": challenge,
        "code_challenge_method": "S256", "login_hint": patient,
    })
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"{smart['authorization_endpoint']}?{query}", timeout=30)
        fail("authorize did not redirect")
    except urllib.error.HTTPError as e:
        if e.code not in (302, 303):
            fail(f"authorize answered {e.code}: {e.read()[:200]!r}")
        location = e.headers["Location"]
    params = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    if params.get("state") != [state]:
        fail("state mismatch")
    if "code" not in params:
        fail(f"no code in redirect: {params.get('error')}")

    form = urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": redirect_uri,
        "client_id": args.client_id, "code_verifier": verifier,
    }).encode()
    req = urllib.request.Request(smart["token_endpoint"], data=form,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        token = json.load(resp)
    access = token["access_token"]
    print(f"logged in: patient={token.get('patient')} scope={token.get('scope')!r} "
          f"expires_in={token.get('expires_in')}")
    if token.get("patient") != patient:
        fail("token response names another patient")

    status, pat = get_json(f"{fhir}/Patient/{urllib.parse.quote(patient)}", access)
    print(f"GET Patient/{patient}: {status} resourceType={pat.get('resourceType')} id={pat.get('id')}")
    q = urllib.parse.urlencode({"patient": patient, "category": "laboratory"})
    status, bundle = get_json(f"{fhir}/Observation?{q}", access)
    print(f"GET Observation?patient={patient}&category=laboratory: {status} "
          f"total={bundle.get('total')} entries={len(bundle.get('entry', []))}")
    if bundle.get("resourceType") != "Bundle" or not bundle.get("entry"):
        fail("expected a non-empty searchset Bundle")

    if args.gateway:
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"{args.gateway}{path}", timeout=30) as resp:
                print(f"GET {args.gateway}{path}: {resp.status}")
                if resp.status != 200:
                    fail(f"{path} is not 200")
    print("ok")


if __name__ == "__main__":
    main()
