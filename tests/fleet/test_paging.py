"""A facade search's paging link (a signed cursor at the public URL) made on replica A is
followed on B and C; another patient cannot use it. Then the cursor key is rotated the
way docs/DEPLOY.md says — the file rewritten as new key, old key; every gateway restarted
— and the old link still works on every replica, while a link made after the rotation
works everywhere too. The control: a replica given only the new key refuses the old
link."""

import secrets

from fleet import READ_SCOPE, bearer, expect, http

NAME = "paging links across replicas and a cursor key rotation"

PATIENT = "pat-5"


def next_link(bundle):
    return next((l["url"] for l in bundle.get("link", []) if l["relation"] == "next"), None)


def first_id(bundle):
    return bundle["entry"][0]["resource"]["id"]


def write_keys(fleet, *keys):
    with open(fleet.cursor_key_file, "w") as f:
        f.write("".join(f"{k}\n" for k in keys))


def run(fleet):
    a, b, c = fleet.replicas[:3]
    token = fleet.patient_token(PATIENT, READ_SCOPE)
    other = fleet.patient_token("pat-6", READ_SCOPE)
    page1 = http("GET", f"{a}/fhir/Observation?patient={PATIENT}&_count=1", headers=bearer(token))
    expect(page1.status == 200 and next_link(page1.json), "a search on A with _count=1 has a next link")
    link = next_link(page1.json)
    expect(link.startswith(f"{fleet.public}/fhir/"), "the link is at the public URL")

    seen = {}
    for name, base in (("B", b), ("C", c), ("the balancer", fleet.lb)):
        page2 = http("GET", fleet.on(base, link), headers=bearer(token))
        expect(page2.status == 200, f"followed on {name}: 200")
        seen[name] = first_id(page2.json)
    expect(len(set(seen.values())) == 1 and first_id(page1.json) not in seen.values(),
           f"each shows the same second page ({seen['B']})")
    page2 = http("GET", fleet.on(b, link), headers=bearer(token)).json
    page3 = http("GET", fleet.on(c, next_link(page2)), headers=bearer(token))
    expect(page3.status == 200 and first_id(page3.json) not in (seen["B"], first_id(page1.json)),
           "B's next link followed on C: the third page")
    refused = http("GET", fleet.on(c, link), headers=bearer(other))
    expect(refused.status in (403, 404), f"another patient's token with the link: {refused.status}")

    old = open(fleet.cursor_key_file).read().split()[0]
    new = secrets.token_hex(32)
    pids = list(fleet.gw_pids)
    write_keys(fleet, new, old)
    fleet.script("--restart-gateways")
    expect(all(p not in pids for p in fleet.gw_pids), "the key file rewritten (new, old); every gateway restarted")
    for name, base in (("A", a), ("B", b), ("C", c)):
        again = http("GET", fleet.on(base, link), headers=bearer(token))
        expect(again.status == 200 and first_id(again.json) == seen["B"],
               f"the old link still works on {name}")
    fresh = http("GET", f"{b}/fhir/Observation?patient={PATIENT}&_count=1", headers=bearer(token))
    new_link = next_link(fresh.json)
    for name, base in (("A", a), ("C", c)):
        expect(http("GET", fleet.on(base, new_link), headers=bearer(token)).status == 200,
               f"a link made after the rotation on B works on {name}")

    # The control: without the old key, the old link is refused (and the new one is not).
    write_keys(fleet, new)
    fleet.script("--restart-gateways", "--only", "1")
    refused = http("GET", fleet.on(a, link), headers=bearer(token))
    expect(refused.status == 400, f"control: A with only the new key refuses the old link ({refused.status})")
    expect(http("GET", fleet.on(a, new_link), headers=bearer(token)).status == 200,
           "and still follows the new one")
    write_keys(fleet, new, old)
    fleet.script("--restart-gateways", "--only", "1")
    expect(http("GET", fleet.on(a, link), headers=bearer(token)).status == 200,
           "A back on (new, old) follows the old link again")
