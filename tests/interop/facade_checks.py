#!/usr/bin/env python3
"""Facade checks through the gateway's /fhir with a patient token, whatever EHR sits
behind it: the same checks against the sandbox, Medplum's engine or sekmet-fhir.

Gets a patient token with a SMART standalone launch (authorization code + PKCE S256,
public client, `aud` = the gateway's /fhir) at the authorization server the gateway
advertises, auto-approved with `login_hint` (the sandbox's auth server), then:

  reads the own Patient; searches Observations with a small _count and follows every
  `next` link (each must point at the gateway, never at the EHR) until the end, with
  every entry the patient's and no entry twice; `_include` brings the referenced
  Medications as `include` entries; another patient's Patient and Observation are 404;
  a search naming another patient returns none of their data; no token is 401.

Standard library only. Exits non-zero on the first failed check.

    python3 tests/interop/facade_checks.py --fhir http://127.0.0.1:8080/fhir \
        --patient pat-1 --other pat-2 --other-observation obs-2-1
"""

import argparse
import base64
import hashlib
import http.cookiejar
import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def expect(condition, what):
    if not condition:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"  ok: {what}")


def get(url, token=None):
    req = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        resp = urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        resp = e
    text = resp.read().decode()
    try:
        return resp.status, json.loads(text) if text else None
    except ValueError:
        return resp.status, text


def follow_login(url, redirect_uri):
    """Follows the authorization server's redirects (with its cookies) until it sends the
    browser back to `redirect_uri`; returns that URL. The sandbox approves in one hop;
    oidc-provider goes through its login and consent interactions first."""
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    for _ in range(10):
        try:
            resp = opener.open(url, timeout=30)
            expect(False, f"the authorization server redirects ({resp.status}, not a redirect)")
        except urllib.error.HTTPError as e:
            expect(e.code in (302, 303), f"the authorization server redirects ({e.code})")
            url = urllib.parse.urljoin(url, e.headers["Location"])
        if url.startswith(redirect_uri):
            return url
    expect(False, "the authorization server sends the browser back")


def patient_token(fhir, patient, client_id, scope):
    status, smart = get(f"{fhir}/.well-known/smart-configuration")
    expect(status == 200 and "authorization_endpoint" in smart, "the gateway advertises SMART endpoints")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    redirect_uri = "http://127.0.0.1:9/callback"  # never contacted: the code is read from Location
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": scope, "state": state, "aud": fhir, "code_challenge": challenge,
        "code_challenge_method": "S256", "login_hint": patient,
    })
    location = follow_login(f"{smart['authorization_endpoint']}?{query}", redirect_uri)
    params = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    expect(params.get("state") == [state] and "code" in params, "the redirect carries the code and state")
    form = urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": redirect_uri,
        "client_id": client_id, "code_verifier": verifier,
    }).encode()
    req = urllib.request.Request(smart["token_endpoint"], data=form,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        token = json.load(resp)
    expect(token.get("patient") == patient, "the token response names the patient")
    return token["access_token"]


def subject_of(resource):
    for key in ("subject", "patient"):
        ref = (resource.get(key) or {}).get("reference")
        if ref:
            return ref
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fhir", required=True, help="the gateway's FHIR base")
    ap.add_argument("--patient", default="pat-1")
    ap.add_argument("--other", default="pat-2", help="another patient's id")
    ap.add_argument("--other-observation", default="obs-2-1", help="one of the other patient's Observations")
    ap.add_argument("--no-upstream-paging", action="store_true",
                    help="the EHR answers searches with no paging links (Medplum's router "
                         "without its server layer): the gateway cannot page past the first "
                         "page and must not invent links; check that instead")
    ap.add_argument("--client-id", default="demo-app")
    ap.add_argument("--scope", default="launch/patient openid fhirUser patient/*.rs")
    args = ap.parse_args()
    fhir = args.fhir.rstrip("/")
    me = f"Patient/{args.patient}"

    print("facade: login")
    token = patient_token(fhir, args.patient, args.client_id, args.scope)

    print("facade: read")
    status, patient = get(f"{fhir}/{me}", token)
    expect(status == 200 and patient.get("id") == args.patient, f"GET {me} (200)")
    status, _ = get(f"{fhir}/{me}")
    expect(status == 401, f"GET {me} without a token is 401 ({status})")

    print("facade: paging")
    url = f"{fhir}/Observation?patient={args.patient}&_count=5"
    seen, pages = [], 0
    while url:
        expect(url.startswith(fhir + "/") or url.startswith(fhir + "?"),
               f"page {pages + 1} link points at the gateway")
        status, bundle = get(url, token)
        expect(status == 200 and bundle.get("resourceType") == "Bundle",
               f"page {pages + 1} is a Bundle ({status})")
        pages += 1
        matches = [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
        expect(len(matches) <= 5, f"page {pages} has at most _count entries ({len(matches)})")
        for r in matches:
            if subject_of(r) != me:
                expect(False, f"Observation/{r.get('id')} belongs to the patient")
        seen += [r["id"] for r in matches]
        url = next((l["url"] for l in bundle.get("link", []) if l.get("relation") == "next"), None)
        if pages > 100:
            expect(False, "paging ends")
    if args.no_upstream_paging:
        expect(pages == 1 and len(seen) == 5, "without upstream links the gateway serves one full page, no invented link")
        status, bundle = get(f"{fhir}/Observation?patient={args.patient}&_count=1000", token)
        everything = [e["resource"] for e in bundle.get("entry", [])]
        expect(status == 200 and len(everything) > 5 and all(subject_of(r) == me for r in everything),
               f"a large _count gets all of them, all the patient's ({len(everything)})")
    else:
        expect(pages >= 2, f"the Observations span several pages ({pages} pages, {len(seen)} entries)")
    expect(len(seen) == len(set(seen)), "no Observation comes twice across pages")

    print("facade: _include")
    status, bundle = get(
        f"{fhir}/MedicationRequest?patient={args.patient}&_include=MedicationRequest:medication", token)
    expect(status == 200, f"MedicationRequest?_include=MedicationRequest:medication ({status})")
    matches = [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "include"]
    included = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode") == "include"}
    wanted = {r["medicationReference"]["reference"] for r in matches if r.get("medicationReference")}
    expect(matches and all(subject_of(r) == me for r in matches), "the MedicationRequests are the patient's")
    expect(wanted and wanted <= included, f"every referenced Medication is included ({len(wanted)})")

    print("facade: another patient")
    status, _ = get(f"{fhir}/Patient/{args.other}", token)
    expect(status == 404, f"GET Patient/{args.other} is 404 ({status})")
    status, _ = get(f"{fhir}/Observation/{args.other_observation}", token)
    expect(status == 404, f"GET Observation/{args.other_observation} is 404 ({status})")
    status, bundle = get(f"{fhir}/Observation?patient={args.other}", token)
    leaked = [e for e in (bundle.get("entry", []) if isinstance(bundle, dict) else [])
              if subject_of(e.get("resource", {})) == f"Patient/{args.other}"]
    expect(status in (200, 403, 404) and not leaked,
           f"Observation?patient={args.other} returns none of their data ({status})")
    print("facade checks: all passed")


if __name__ == "__main__":
    main()
