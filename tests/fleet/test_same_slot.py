"""Ten patients book the same slot at the same moment, their requests spread over the
replicas (each with its own Idempotency-Key): exactly one booking exists in the EHR, the
one the winner was told about; everyone else is told the slot is taken."""

import threading
import uuid
from collections import Counter

from fleet import Browser, expect, note

NAME = "ten patients, one slot, three replicas"

PATIENTS = [f"pat-{n}" for n in range(11, 21)]


def run(fleet):
    replicas = fleet.replicas
    browsers = []
    for i, patient in enumerate(PATIENTS):
        browser = Browser(fleet)
        browser.sign_in(replicas[i % len(replicas)], replicas[(i + 1) % len(replicas)], patient)
        browsers.append(browser)
    expect(len(browsers) == len(PATIENTS), f"{len(PATIENTS)} patients signed in across the replicas")

    slots = browsers[0].get(f"{fleet.lb}/api/v1/appointments/slots").json["slots"]
    slot = slots[-1]["id"]
    expect(not fleet.appointments_holding(slot), f"slot {slot} is free in the EHR")
    posts_before = fleet.ehr_requests("POST", "Appointment")

    barrier = threading.Barrier(len(browsers))
    results = [None] * len(browsers)

    def book(i):
        base = replicas[(i + 2) % len(replicas)]
        barrier.wait()
        results[i] = browsers[i].post(base, "/api/v1/appointments",
                                      {"slot_id": slot, "reason": "fleet: same slot"},
                                      str(uuid.uuid4()))

    threads = [threading.Thread(target=book, args=(i,)) for i in range(len(browsers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    answers = Counter((r.status, r.code) for r in results)
    note(f"answers: {dict(answers)}; slowest {max(r.elapsed for r in results):.2f}s")
    winners = [i for i, r in enumerate(results) if r.status == 201]
    expect(len(winners) == 1, "exactly one booking succeeded")
    losers = [r for r in results if r.status != 201]
    expect(all(r.status == 409 and r.code in ("slot_unavailable", "busy") for r in losers),
           "every other patient was told 409 slot_unavailable (or busy: nothing attempted)")

    held = fleet.appointments_holding(slot)
    expect(len(held) == 1, f"the EHR holds exactly one appointment on the slot ({len(held)})")
    winner = PATIENTS[winners[0]]
    actors = [p.get("actor", {}).get("reference") for p in held[0].get("participant", [])]
    expect(held[0]["id"] == results[winners[0]].json["id"] and f"Patient/{winner}" in actors,
           f"it is the winner's ({winner}), with the id the winner was given")
    expect(fleet.ehr_read("Slot", slot).get("status") == "busy", "the slot is busy in the EHR")
    posts = fleet.ehr_requests("POST", "Appointment") - posts_before
    note(f"{posts} create(s) reached the EHR (the gateway's slot lock in Redis serializes the "
         f"replicas; the EHR's own double-booking refusal is the last line)")
