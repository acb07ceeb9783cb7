"""Redis is killed mid-run. On every replica, what needs it answers 503 with its code —
a keyed write `idempotency_unavailable`, a write that needs a lock `state_unavailable`, a
cookie session or a login `session_store_unavailable` — at once and with Retry-After, and
nothing reaches the EHR; reads with a bearer token (portal and facade) still work. Redis is
started again (empty: it persists nothing) and, without restarting any gateway, service
resumes: a booking made before the outage and retried with its key after it is found again
by its business identifier instead of being made twice; new keyed writes are remembered
again; a new login works across replicas."""

import time
import uuid

from fleet import READ_SCOPE, Browser, bearer, expect, free_slots, http, note

NAME = "Redis stopped and restarted under the fleet"


def run(fleet):
    replicas = fleet.replicas
    a, b, c = replicas[:3]
    portal = fleet.patient_token("pat-32")
    facade = fleet.patient_token("pat-32", READ_SCOPE)
    browser = Browser(fleet)
    browser.sign_in(a, b, "pat-31")
    slots = free_slots(fleet.lb, portal)
    before_slot, after_slot = slots[-1], slots[-2]

    early_key = str(uuid.uuid4())
    early = http("POST", f"{c}/api/v1/appointments", {"slot_id": before_slot},
                 headers=bearer(portal, {"Idempotency-Key": early_key}))
    expect(early.status == 201, f"before the outage: a keyed booking on C ({early.json['id']})")
    pids = list(fleet.gw_pids)
    posts_before = fleet.ehr_requests("POST", "Appointment")
    try:
        fleet.script("--redis", "stop")
        note("redis-server killed")
        for base in replicas:
            port = base.rsplit(":", 1)[1]
            keyed = http("POST", f"{base}/api/v1/appointments", {"slot_id": after_slot},
                         headers=bearer(portal, {"Idempotency-Key": str(uuid.uuid4())}))
            expect(keyed.status == 503 and keyed.code == "idempotency_unavailable"
                   and keyed.headers.get("Retry-After"),
                   f":{port} keyed write: 503 idempotency_unavailable, Retry-After")
            unkeyed = http("POST", f"{base}/api/v1/appointments", {"slot_id": after_slot},
                           headers=bearer(portal))
            expect(unkeyed.status == 503 and unkeyed.code == "state_unavailable",
                   f":{port} write without a key (needs the slot's lock): 503 state_unavailable")
            session = browser.get(f"{base}/api/v1/me")
            login = http("GET", f"{base}/auth/login")
            expect(session.status == 503 and session.code == "session_store_unavailable"
                   and login.status == 503 and login.code == "session_store_unavailable",
                   f":{port} cookie session and /auth/login: 503 session_store_unavailable")
            reads = [http("GET", f"{base}/api/v1/appointments", headers=bearer(portal)),
                     http("GET", f"{base}/fhir/Patient/pat-32", headers=bearer(facade)),
                     http("GET", f"{base}/fhir/Observation?patient=pat-32&_count=3",
                          headers=bearer(facade))]
            expect(all(r.status == 200 for r in reads),
                   f":{port} bearer reads (portal appointments, facade read and search): 200")
            slowest = max(r.elapsed for r in [keyed, unkeyed, session, login, *reads])
            expect(slowest < 3, f":{port} every answer within 3 s (slowest {slowest:.2f}s)")
        expect(fleet.ehr_requests("POST", "Appointment") == posts_before,
               "no write reached the EHR during the outage")
        expect(not fleet.appointments_holding(after_slot), "the EHR holds nothing on the slot tried")
    finally:
        fleet.script("--redis", "start")
    note("redis-server started again on its port, empty")
    expect(fleet.gw_pids == pids, "no gateway was restarted")

    # Each replica serves again, without a restart, once its Redis client has reconnected
    # (a request may still meet the broken connection and answer 503 first: it is retried,
    # as a client honouring Retry-After would).
    cookie = dict(browser.jar)

    def old_session(base):
        browser.jar = dict(cookie)
        return browser.get(f"{base}/auth/session")

    for base in replicas:
        port = base.rsplit(":", 1)[1]
        reply, failed, took = until_served(lambda: old_session(base))
        expect(reply.status == 401 and reply.code == "session_expired",
               f":{port} serves sessions again after {took:.1f}s ({failed} 503 first): the "
               f"old session is gone with Redis's data (401 {reply.code})")

    again, failed, _ = until_served(lambda: http(
        "POST", f"{b}/api/v1/appointments", {"slot_id": before_slot},
        headers=bearer(portal, {"Idempotency-Key": early_key})))
    expect(again.status == 201 and again.json["id"] == early.json["id"],
           f"the early booking retried with its key on B ({failed} 503 first), which Redis "
           f"forgot: the same appointment, found by its business identifier ({again.brief()[:80]})")
    held = fleet.appointments_holding(before_slot)
    expect(len(held) == 1, f"the EHR still holds exactly one appointment on that slot ({len(held)})")

    key = str(uuid.uuid4())
    booked, failed, _ = until_served(lambda: http(
        "POST", f"{c}/api/v1/appointments", {"slot_id": after_slot},
        headers=bearer(portal, {"Idempotency-Key": key})))
    expect(booked.status == 201, f"a new keyed booking on C ({failed} 503 first): {booked.status}")
    replay, failed, _ = until_served(lambda: http(
        "POST", f"{a}/api/v1/appointments", {"slot_id": after_slot},
        headers=bearer(portal, {"Idempotency-Key": key})))
    expect(replay.status == 201 and replay.headers.get("Idempotent-Replayed") == "true"
           and replay.json == booked.json,
           f"its retry on A ({failed} 503 first) is replayed from Redis")
    expect(len(fleet.appointments_holding(after_slot)) == 1, "one appointment on that slot in the EHR")

    fresh = Browser(fleet)
    login, failed, _ = until_served(lambda: fresh.login(c, a, "pat-31"))
    expect(login.status == 303, f"a new login: started on C, callback on A ({failed} 503 first)")
    expect(fresh.get(f"{b}/auth/session").status == 200, "its session works on B")


def until_served(send, seconds=15):
    """Sends until the answer is not a 503; returns it, how many 503s came first, and how
    long it took."""
    started = time.monotonic()
    failed = 0
    while (reply := send()).status == 503 and time.monotonic() - started < seconds:
        failed += 1
        time.sleep(0.2)
    return reply, failed, time.monotonic() - started
