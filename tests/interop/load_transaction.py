#!/usr/bin/env python3
"""POST a transaction Bundle (`portico sandbox export`) to a FHIR base and check that
every entry succeeded. Standard library only.

    python3 tests/interop/load_transaction.py dataset.json http://127.0.0.1:8096/fhir
"""

import json
import sys
import urllib.error
import urllib.request


def main():
    path, base = sys.argv[1], sys.argv[2].rstrip("/")
    body = open(path, "rb").read()
    req = urllib.request.Request(base, data=body, method="POST",
                                 headers={"Content-Type": "application/fhir+json",
                                          "Accept": "application/fhir+json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            bundle = json.load(resp)
    except urllib.error.HTTPError as e:
        sys.exit(f"the transaction was refused: {e.code} {e.read()[:500]!r}")
    entries = bundle.get("entry", [])
    bad = [e["response"]["status"] for e in entries
           if not e.get("response", {}).get("status", "").startswith(("200", "201"))]
    if bundle.get("type") != "transaction-response" or bad:
        sys.exit(f"{len(bad)} entries failed: {bad[:3]}")
    print(f"loaded {len(entries)} resources in one transaction")


if __name__ == "__main__":
    main()
