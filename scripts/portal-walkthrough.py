#!/usr/bin/env python3
"""Walk through the portal API as a logged-in patient of `portico demo`.

Logs in through the gateway's own login (`/auth/login`: authorization code + PKCE
against the sandbox EHR, auto-approved with `login_hint`), then, with the session
cookie and its CSRF token like a browser SPA would:

  book a free slot, see it on the dashboard, cancel it, book and reschedule another;
  request a refill for an eligible medication and be refused (with the reason) for an
  exhausted and an expired one; request a referral; start a thread with a care-team
  member and reply; be refused a recipient outside the care team; view and pay a bill;
  and check that writes repeated with the same Idempotency-Key happen once.

Standard library only. Exits non-zero on the first check that fails.

    python3 scripts/portal-walkthrough.py --gateway http://127.0.0.1:8080 --patient pat-1
"""

import argparse
import http.cookiejar
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Portal:
    def __init__(self, gateway):
        self.gateway = gateway.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            NoRedirect, urllib.request.HTTPCookieProcessor(self.jar)
        )
        self.csrf = None
        self.checks = 0

    def raw(self, method, url, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            resp = self.opener.open(req, timeout=30)
        except urllib.error.HTTPError as e:
            resp = e
        text = resp.read().decode()
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = text
        return resp.status, resp.headers, payload

    def login(self, patient):
        status, headers, _ = self.raw("GET", f"{self.gateway}/auth/login")
        expect(status == 303, f"/auth/login redirects to the EHR (got {status})")
        url = headers.get("Location") + f"&login_hint={urllib.parse.quote(patient)}"
        # The authorization server approves (the sandbox's in one redirect; others, such as
        # oidc-provider, through their own login and consent pages first).
        for _ in range(10):
            status, headers, _ = self.raw("GET", url)
            expect(status in (302, 303), f"the authorization server redirects (got {status})")
            url = urllib.parse.urljoin(url, headers.get("Location"))
            if url.startswith(f"{self.gateway}/auth/callback"):
                break
        expect(url.startswith(f"{self.gateway}/auth/callback"), "the EHR approves the login")
        status, headers, _ = self.raw("GET", url)
        expect(status == 303, f"the callback opens a session (got {status})")
        status, _, session = self.raw("GET", f"{self.gateway}/auth/session")
        expect(status == 200 and session.get("csrf_token"), "the session has a CSRF token")
        self.csrf = session["csrf_token"]

    def get(self, path):
        status, _, body = self.raw("GET", f"{self.gateway}/api/v1{path}")
        return status, body

    def post(self, path, body, key=None):
        headers = {"X-CSRF-Token": self.csrf, "Origin": self.gateway}
        if key:
            headers["Idempotency-Key"] = key
        status, resp_headers, payload = self.raw(
            "POST", f"{self.gateway}/api/v1{path}", body, headers
        )
        return status, payload, resp_headers


def expect(condition, what):
    if not condition:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"  ok: {what}")


def ok(status, body, what, wanted=(200, 201)):
    expect(status in wanted, f"{what} ({status}{'' if status in wanted else ': ' + json.dumps(body)[:300]})")
    return body


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", default="http://127.0.0.1:8080")
    ap.add_argument("--patient", default="pat-1")
    ap.add_argument("--plain-fhir-server", action="store_true",
                    help="the upstream is a FHIR store without an EHR's scheduling and "
                         "billing logic (Medplum's engine, sekmet-fhir): it does not lower an "
                         "Account's balance when a payment is recorded (a booked Slot stays "
                         "\"free\" there too, but the gateway refuses a second booking by "
                         "finding the appointment that holds it)")
    ap.add_argument("--skip-payments", action="store_true",
                    help="list the bills but pay none: for an EHR that cannot record a "
                         "payment exactly once (sekmet-fhir 0.1.1 has no PaymentReconciliation "
                         "identifier search, so If-None-Exist is refused)")
    args = ap.parse_args()
    p = Portal(args.gateway)

    print("login")
    p.login(args.patient)
    me = ok(*p.get("/me"), "GET /me")
    expect(me["id"] == args.patient, "/me is the logged-in patient")

    print("appointments")
    slots = ok(*p.get("/appointments/slots"), "free slots in the next two weeks")["slots"]
    expect(len(slots) >= 2, f"at least two free slots ({len(slots)})")
    key = str(uuid.uuid4())
    status, booked, _ = p.post("/appointments", {"slot_id": slots[0]["id"], "reason": "Check-up"}, key)
    booked = ok(status, booked, "book a free slot", (201,))
    status, again, headers = p.post("/appointments", {"slot_id": slots[0]["id"], "reason": "Check-up"}, key)
    expect(status == 201 and again["id"] == booked["id"] and headers.get("idempotent-replayed") == "true",
           "the same Idempotency-Key replays the booking instead of booking twice")
    # Also on a plain FHIR store, which leaves the Slot "free": the gateway finds the
    # appointment that holds it.
    status, taken, _ = p.post("/appointments", {"slot_id": slots[0]["id"]})
    expect(status == 409 and taken["code"] == "slot_unavailable", "the booked slot is no longer free")
    dashboard = ok(*p.get("/dashboard"), "GET /dashboard")
    expect(any(a["id"] == booked["id"] for a in dashboard["upcoming_appointments"]),
           "the booking is on the dashboard")
    status, cancelled, _ = p.post(f"/appointments/{booked['id']}/cancel", {"reason": "Feeling better"})
    cancelled = ok(status, cancelled, "cancel it")
    expect(cancelled["status"] == "cancelled", "it is cancelled")
    status, second, _ = p.post("/appointments", {"slot_id": slots[1]["id"]}, str(uuid.uuid4()))
    second = ok(status, second, "book another slot", (201,))
    slots = ok(*p.get("/appointments/slots"), "free slots again")["slots"]
    target = slots[0]
    status, moved, _ = p.post(f"/appointments/{second['id']}/reschedule", {"slot_id": target["id"]}, str(uuid.uuid4()))
    moved = ok(status, moved, "reschedule it")
    expect(moved["previous"]["status"] == "cancelled" and moved["appointment"]["status"] == "booked",
           "the new time is booked and the old one cancelled")

    print("refills")
    meds = ok(*p.get("/medications"), "GET /medications")["items"]
    eligible = next((m for m in meds if m["refill"]["eligible"]), None)
    expect(eligible is not None, "an eligible prescription")
    status, refill, _ = p.post(f"/medications/{eligible['id']}/refill-requests", {"note": "Running low"}, str(uuid.uuid4()))
    ok(status, refill, f"request a refill of {eligible['medication']}", (201,))
    for reason in ("no_refills_left", "expired"):
        med = next((m for m in meds if m["refill"].get("reason") == reason), None)
        expect(med is not None, f"a prescription refused for {reason}")
        status, refused, _ = p.post(f"/medications/{med['id']}/refill-requests", {})
        expect(status == 422 and refused["code"] == "refill_not_eligible"
               and refused.get("details", {}).get("reason") == reason,
               f"a refill is refused with reason {reason}")
    requests = ok(*p.get("/refill-requests"), "GET /refill-requests")
    expect(len(requests["items"]) >= 1, "the refill request is listed")

    print("referrals")
    specialties = ok(*p.get("/referrals/specialties"), "the configured specialties")["items"]
    status, referral, _ = p.post("/referrals", {"specialty": specialties[0]["code"], "reason": "Recurring headaches"}, str(uuid.uuid4()))
    ok(status, referral, f"request a referral to {specialties[0]['display']}", (201,))
    referrals = ok(*p.get("/referrals"), "GET /referrals")
    expect(any(r["id"] == referral["id"] for r in referrals["items"]), "the referral is listed")

    print("messages")
    team = ok(*p.get("/records/care-team"), "the care team")["items"]
    members = [person["reference"] for t in team for person in t["people"]
               if (person.get("reference") or "").startswith("Practitioner/")]
    expect(members, "a care-team practitioner to write to")
    key = str(uuid.uuid4())
    body = {"recipient": members[0], "topic": "Question about my medication", "text": "Should I take it with food?"}
    status, thread, _ = p.post("/messages/threads", body, key)
    thread = ok(status, thread, "start a thread with a care-team member", (201,))
    status, again, _ = p.post("/messages/threads", body, key)
    expect(status == 201 and again["id"] == thread["id"], "the same key does not start a second thread")
    status, reply, _ = p.post(f"/messages/threads/{thread['id']}/replies", {"text": "Also: morning or evening?"})
    ok(status, reply, "reply in the thread", (201,))
    outsider = next(f"Practitioner/prac-{n}" for n in range(1, 100) if f"Practitioner/prac-{n}" not in members)
    status, refused, _ = p.post("/messages/threads", dict(body, recipient=outsider))
    expect(status == 422 and refused["code"] == "recipient_not_allowed",
           "a recipient outside the care team is refused")
    threads = ok(*p.get("/messages/threads"), "GET /messages/threads")["threads"]
    expect(any(t["id"] == thread["id"] and t["message_count"] == 2 for t in threads),
           "the thread shows both messages")

    print("bills")
    bills = ok(*p.get("/bills"), "GET /bills")
    payable = next((a for a in bills["accounts"] if a["payable"]), None)
    expect(payable is not None, "a bill with a balance")
    if args.skip_payments:
        print("  skipped: paying a bill (--skip-payments)")
        print("portal walkthrough: all checks passed")
        return
    before = payable["balance"]["value"]
    amount = round(min(before, 25.0), 2)
    key = str(uuid.uuid4())
    payment = {"amount": {"value": amount, "currency": payable["balance"]["currency"]}, "payment_token": "tok_ok"}
    status, paid, _ = p.post(f"/bills/{payable['id']}/payments", payment, key)
    ok(status, paid, f"pay {amount} of {before}", (201,))
    status, again, _ = p.post(f"/bills/{payable['id']}/payments", payment, key)
    expect(status == 201 and again == paid, "paying again with the same key charges once")
    after = next(a for a in ok(*p.get("/bills"), "GET /bills again")["accounts"] if a["id"] == payable["id"])
    if not args.plain_fhir_server:
        expect(abs(after["balance"]["value"] - (before - amount)) < 0.005, "the balance went down by the amount paid")
    else:
        print("  skipped: the balance went down (this EHR does not post payments to accounts)")
    status, refused, _ = p.post(f"/bills/{payable['id']}/payments",
                                {"amount": {"value": before + 1000, "currency": "USD"}, "payment_token": "tok_ok"})
    expect(status == 422 and refused["code"] == "amount_exceeds_balance", "paying more than the balance is refused")

    print("portal walkthrough: all checks passed")


if __name__ == "__main__":
    main()
