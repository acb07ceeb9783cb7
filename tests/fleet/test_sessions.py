"""One browser's portal session, each step on another replica: the login starts on A,
its callback (at the public URL) lands on B, the session is used on C, the logout goes to
A, and the same cookie on B is then refused. A callback replayed on another replica is
refused too: a pending login is taken once, fleet-wide."""

from fleet import Browser, expect, note

NAME = "a login across replicas, a logout everywhere"


def run(fleet):
    a, b, c = fleet.replicas[:3]
    browser = Browser(fleet)
    reply = browser.login(a, b, "pat-4")
    expect(reply.status == 303 and "portico_session" in browser.jar,
           "login started on A, callback on B: a session cookie")
    session = browser.get(f"{c}/auth/session")
    expect(session.status == 200 and session.json["patient"] == "pat-4",
           "C knows the session (patient pat-4)")
    csrf = session.json["csrf_token"]
    me = browser.get(f"{c}/api/v1/me")
    expect(me.status == 200 and me.json["id"] == "pat-4", "GET /api/v1/me on C")
    cookie = dict(browser.jar)

    browser.csrf = csrf
    logout = browser.post(a, "/auth/logout", None)
    expect(logout.status == 204, f"logout on A ({logout.status})")
    browser.jar = cookie  # the old cookie, as a stolen or stale copy would present it
    after = browser.get(f"{b}/api/v1/me")
    expect(after.status == 401 and after.code == "session_expired",
           f"the same cookie on B afterwards: 401 {after.code}")
    expect(browser.get(f"{c}/auth/session").status == 401, "and on C")

    # A pending login is taken once: its callback replayed on another replica is refused.
    other = Browser(fleet)
    start = other.get(f"{b}/auth/login")
    approved = other.get(f"{start.location}&login_hint=pat-4")
    pending = dict(other.jar)
    first = other.get(fleet.on(c, approved.location))
    expect(first.status == 303, "a second login: callback on C")
    other.jar = pending
    replay = other.get(fleet.on(a, approved.location))
    expect(replay.status == 400 and replay.code == "login_not_in_progress",
           f"the same callback replayed on A: {replay.status} {replay.code}")
    note("sessions and pending logins live in Redis; any replica serves any step")
