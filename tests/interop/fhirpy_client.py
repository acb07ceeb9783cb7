#!/usr/bin/env python3
"""`fhirpy` (PyPI, pinned in requirements.txt) against the gateway's /fhir.

fhirpy has no SMART login of its own: the patient token comes from the same standalone
launch as facade_checks.py (authorization code + PKCE at the endpoints the gateway's
/fhir/.well-known/smart-configuration advertises). Then, with fhirpy's synchronous
client: read the Patient, search Observations page by page (`fetch_all` follows the
`next` links the gateway hands out), and be refused another patient's Patient.

    .interop/venv/bin/python tests/interop/fhirpy_client.py --fhir http://127.0.0.1:8080/fhir \
        --patient pat-3 --other pat-1
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from facade_checks import expect, patient_token  # noqa: E402
from fhirpy import SyncFHIRClient  # noqa: E402
from fhirpy.base.exceptions import ResourceNotFound  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fhir", required=True)
    ap.add_argument("--patient", default="pat-3")
    ap.add_argument("--other", default="pat-1")
    ap.add_argument("--client-id", default="demo-app")
    ap.add_argument("--no-upstream-paging", action="store_true",
                    help="the EHR gives no paging links: expect a single page")
    args = ap.parse_args()

    token = patient_token(args.fhir.rstrip("/"), args.patient, args.client_id,
                          "launch/patient openid fhirUser patient/*.rs")
    fhir = SyncFHIRClient(args.fhir, authorization=f"Bearer {token}",
                          extra_headers={"Accept": "application/fhir+json"})

    patient = fhir.reference("Patient", args.patient).to_resource()
    expect(patient["id"] == args.patient, f"Patient/{args.patient} read through the gateway")

    search = fhir.resources("Observation").search(patient=args.patient).limit(5)
    first = search.fetch()
    expect(0 < len(first) <= 5, f"first page of Observations ({len(first)})")
    everything = search.fetch_all()
    ids = [o["id"] for o in everything]
    if args.no_upstream_paging:
        expect(len(ids) == len(first), f"one page without upstream links ({len(ids)})")
    else:
        expect(len(ids) > len(first) and len(ids) == len(set(ids)),
               f"fetch_all follows the gateway's next links ({len(ids)} Observations)")
    expect({o["subject"]["reference"] for o in everything} == {f"Patient/{args.patient}"},
           "every Observation is the patient's")

    try:
        fhir.reference("Patient", args.other).to_resource()
        expect(False, f"Patient/{args.other} is refused")
    except ResourceNotFound:
        expect(True, f"Patient/{args.other} is refused (404)")
    print("fhirpy: all checks passed")


if __name__ == "__main__":
    main()
