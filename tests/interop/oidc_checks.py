#!/usr/bin/env python3
"""The grants of the oidc-provider scenario, checked from outside (standard library):

  - client_credentials with a client secret: a JWT access token for the gateway's /fhir
    (`aud`), with `scope`;
  - the gateway's own upstream token (private_key_jwt, RS384) was obtained: /readyz says
    its upstream credentials are ok;
  - authorization code + PKCE (public client) with offline_access: the access token is a
    JWT carrying `patient`, `fhirUser` and `scope`, the token response names the patient,
    a refresh token comes with it; the refresh grant gives a new access token that the
    gateway accepts for the patient (and still refuses another patient's record).

    python3 tests/interop/oidc_checks.py --issuer http://127.0.0.1:8097 \
        --fhir http://127.0.0.1:8080/fhir --system-secret-file DIR/system.secret \
        --readyz http://127.0.0.1:8080/readyz --patient pat-2
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from facade_checks import expect, follow_login, get  # noqa: E402


def claims(jwt):
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def token(endpoint, form, basic=None):
    req = urllib.request.Request(endpoint, data=urllib.parse.urlencode(form).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    if basic:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--fhir", required=True)
    ap.add_argument("--system-secret-file", required=True)
    ap.add_argument("--readyz", required=True)
    ap.add_argument("--patient", default="pat-2")
    ap.add_argument("--other", default="pat-1")
    args = ap.parse_args()
    fhir = args.fhir.rstrip("/")

    status, config = get(f"{args.issuer}/.well-known/openid-configuration")
    expect(status == 200 and config["issuer"] == args.issuer, "oidc-provider discovery")
    endpoint = config["token_endpoint"]

    secret = open(args.system_secret_file).read().strip()
    answer = token(endpoint, {"grant_type": "client_credentials", "scope": "system/*.read"},
                   ("portico-system", secret))
    c = claims(answer["access_token"])
    expect(c.get("aud") == fhir and "system/*.read" in c.get("scope", "").split(),
           "client_credentials (client secret): a JWT for the gateway's /fhir with its scope")

    status, ready = get(args.readyz)
    expect(status == 200 and ready["checks"]["upstream_credentials"]["status"] == "ok",
           "the gateway got its upstream token with private_key_jwt (RS384)")

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    redirect_uri = "http://127.0.0.1:9/callback"
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": "demo-app", "redirect_uri": redirect_uri,
        "scope": "openid fhirUser launch/patient offline_access patient/*.rs", "state": state,
        "aud": fhir, "code_challenge": challenge, "code_challenge_method": "S256",
        "login_hint": args.patient, "prompt": "consent",
    })
    back = follow_login(f"{config['authorization_endpoint']}?{query}", redirect_uri)
    params = urllib.parse.parse_qs(urllib.parse.urlparse(back).query)
    expect(params.get("state") == [state] and "code" in params, "authorization code + PKCE: the code comes back")
    answer = token(endpoint, {"grant_type": "authorization_code", "code": params["code"][0],
                              "redirect_uri": redirect_uri, "client_id": "demo-app",
                              "code_verifier": verifier})
    c = claims(answer["access_token"])
    expect(c.get("patient") == args.patient and c.get("fhirUser") == f"Patient/{args.patient}"
           and "patient/*.rs" in c.get("scope", "").split() and c.get("aud") == fhir,
           "the access token is a JWT with patient, fhirUser, scope and aud")
    expect(answer.get("patient") == args.patient, "the token response names the patient")
    expect(bool(answer.get("refresh_token")), "a refresh token comes with offline_access")

    refreshed = token(endpoint, {"grant_type": "refresh_token", "refresh_token": answer["refresh_token"],
                                 "client_id": "demo-app"})
    expect(refreshed["access_token"] != answer["access_token"], "the refresh grant gives a new access token")
    status, patient = get(f"{fhir}/Patient/{args.patient}", refreshed["access_token"])
    expect(status == 200 and patient["id"] == args.patient, "the gateway accepts the refreshed token")
    status, _ = get(f"{fhir}/Patient/{args.other}", refreshed["access_token"])
    expect(status == 404, f"and still refuses Patient/{args.other} (404)")
    print("oidc-provider grants: all checks passed")


if __name__ == "__main__":
    main()
