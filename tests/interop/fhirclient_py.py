#!/usr/bin/env python3
"""SMART on FHIR's Python `fhirclient` (PyPI, pinned in requirements.txt) against the
gateway's /fhir: a standalone launch as a public client with PKCE.

fhirclient finds the OAuth endpoints only in the CapabilityStatement's `oauth-uris`
extension, so this also proves the gateway's /fhir/metadata carries them. The
authorization server auto-approves with `login_hint` (the sandbox's; oidc-provider's
scripted login in a later scenario). Then: read the Patient with the library's models,
search Observations with paging (`perform_resources_iter` follows the `next` links),
and be refused another patient's Patient (404).

    .interop/venv/bin/python tests/interop/fhirclient_py.py --fhir http://127.0.0.1:8080/fhir \
        --patient pat-3 --other pat-1
"""

import argparse
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from facade_checks import expect, follow_login  # noqa: E402
from fhirclient import client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fhir", required=True)
    ap.add_argument("--patient", default="pat-3")
    ap.add_argument("--other", default="pat-1")
    ap.add_argument("--client-id", default="demo-app")
    ap.add_argument("--page-size", type=int, default=5)
    ap.add_argument("--no-upstream-paging", action="store_true",
                    help="the EHR gives no paging links: expect a single page")
    args = ap.parse_args()

    smart = client.FHIRClient(settings={
        "app_id": args.client_id,
        "api_base": args.fhir,
        "redirect_uri": "http://127.0.0.1:9/callback",
        "scope": "launch/patient openid fhirUser patient/*.rs",
    })
    authorize = smart.authorize_url
    expect(authorize is not None, "fhirclient found the authorize endpoint in /fhir/metadata (oauth-uris)")
    authorize += "&login_hint=" + urllib.parse.quote(args.patient)
    callback = follow_login(authorize, "http://127.0.0.1:9/callback")
    smart.handle_callback(callback)
    expect(smart.ready and smart.patient_id == args.patient, f"token for {args.patient} (launch context patient)")

    patient = Patient.read(args.patient, smart.server)
    expect(patient.id == args.patient and patient.name, f"Patient.read({args.patient}) through the gateway")

    search = Observation.where(struct={"patient": args.patient, "_count": str(args.page_size)})
    bundle = search.perform(smart.server)
    first = len(bundle.entry or [])
    expect(0 < first <= args.page_size, f"Observation search, first page of {first}")
    ids = [o.id for o in search.perform_resources_iter(smart.server)]
    subjects = {o.subject.reference for o in search.perform_resources(smart.server)}
    if args.no_upstream_paging:
        expect(len(ids) == first, f"one page without upstream links ({len(ids)})")
    else:
        expect(len(ids) > first and len(ids) == len(set(ids)),
               f"perform_resources_iter follows the gateway's next links ({len(ids)} Observations)")
    expect(subjects == {f"Patient/{args.patient}"}, "every Observation is the patient's")

    try:
        Patient.read(args.other, smart.server)
        expect(False, f"Patient.read({args.other}) is refused")
    except FHIRNotFoundException:
        expect(True, f"Patient.read({args.other}) is refused (404)")
    print("fhirclient (Python): all checks passed")


if __name__ == "__main__":
    main()
