#!/usr/bin/env python3
"""The patient portal in a real browser: headless Chromium driven by Selenium (the
system's chromedriver), against a running `portico demo` (gateway + sandbox EHR).

Runs every flow three times — with JavaScript on, with JavaScript off, and with the
keyboard only (no clicks) — each as another demo patient: sign in through the sandbox's
patient picker, book an appointment, move it, cancel it, ask for a refill and have a
second one refused with its reason, ask for a referral, start a message thread and
reply, pay a bill, sign out. Each effect is checked in the sandbox EHR itself (its FHIR
API, with the gateway's system client). With JavaScript on, axe-core is injected into
every page (error states included) and must find no violation at WCAG 2.0/2.1 A and
AA; every page must reflow at 320 CSS pixels without horizontal scrolling; with the
keyboard, every focused element must show a visible focus style. Screenshots of the
main pages are written to --screenshots (docs/portal/).

Started by scripts/browser-tests.sh; ends with "N passed, M failed".
"""

import argparse
import base64
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import Select, WebDriverWait

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

passed = 0
failures = []


def check(name, condition, detail=""):
    """Records one check."""
    global passed
    if condition:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}", flush=True)


def left_behind(element):
    """`EC.staleness_of`, also when chromedriver answers that the node belongs to no
    document any more (asked while the next page replaces it) instead of "stale"."""

    def predicate(_driver):
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise

    return predicate

class Sandbox:
    """The sandbox EHR's FHIR API, read with the gateway's system client."""

    def __init__(self, ehr, secret):
        self.base = ehr.rstrip("/") + "/fhir"
        body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "scope": "system/*.read"}
        ).encode()
        auth = base64.b64encode(f"portico-system:{secret}".encode()).decode()
        req = urllib.request.Request(
            ehr.rstrip("/") + "/auth/token",
            data=body,
            headers={
                "Authorization": f"Basic {auth}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with urllib.request.urlopen(req, timeout=10) as res:
            self.token = json.load(res)["access_token"]

    def get(self, path):
        req = urllib.request.Request(
            self.base + path,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json"},
        )
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.load(res)

    def search(self, rtype, **params):
        params.setdefault("_count", "1000")
        bundle = self.get(f"/{rtype}?{urllib.parse.urlencode(params)}")
        return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]

    def read(self, rtype, rid):
        return self.get(f"/{rtype}/{rid}")


class Portal:
    """One browser session against the portal."""

    def __init__(self, gateway, mode, axe_source, shots):
        self.gateway = gateway.rstrip("/")
        self.mode = mode
        self.axe_source = axe_source
        self.shots = shots
        self.profile = tempfile.mkdtemp(prefix="portico-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={self.profile}",
            "--window-size=1280,1000",
            "--lang=en-US",
            "--force-prefers-reduced-motion",
        ]:
            options.add_argument(arg)
        prefs = {"intl.accept_languages": "en-US,en"}
        if mode == "nojs":
            prefs["profile.managed_default_content_settings.javascript"] = 2
        options.add_experimental_option("prefs", prefs)
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.d.set_page_load_timeout(30)

    def close(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- reading the page ------------------------------------------------------------

    def url(self, path):
        return self.gateway + path

    def path(self):
        parts = urllib.parse.urlsplit(self.d.current_url)
        return parts.path + (("?" + parts.query) if parts.query else "")

    def h1(self):
        return self.d.find_element(By.TAG_NAME, "h1").text.strip()

    def texts(self, css):
        return [e.text.strip() for e in self.d.find_elements(By.CSS_SELECTOR, css)]

    def one(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def get(self, path):
        self.d.get(self.url(path))

    # -- acting: with the mouse, or with the keyboard only ---------------------------

    def tab_to(self, css, limit=300, backwards=False):
        """Presses Tab until the focused element matches `css`; checks its focus style."""
        targets = self.d.find_elements(By.CSS_SELECTOR, css)
        check(f"{self.mode}: {css} exists on {self.path()}", targets, "")
        if not targets:
            return None
        key = (Keys.SHIFT + Keys.TAB) if backwards else Keys.TAB
        for _ in range(limit):
            ActionChains(self.d).send_keys(key).perform()
            active = self.d.switch_to.active_element
            if any(active == t for t in targets):
                self.check_focus_visible(active, css)
                return active
        check(f"{self.mode}: reach {css} with Tab", False, self.path())
        return None

    def check_focus_visible(self, el, css):
        style = self.d.execute_script(
            "const s = getComputedStyle(arguments[0]);"
            "return [s.outlineStyle, s.outlineWidth, s.boxShadow, s.backgroundColor];",
            el,
        )
        outline, width, shadow, _bg = style
        visible = (outline not in ("none", "") and width not in ("0px", "")) or shadow not in ("none", "")
        check(f"keyboard: visible focus on {css} ({self.path()})", visible, str(style))

    def press(self, css):
        """Activates a link or button — a click, or (keyboard) Tab to it then Enter —
        and waits for the page it leads to (through any redirects)."""
        old = self.d.find_element(By.TAG_NAME, "html")
        if self.mode == "keyboard":
            el = self.tab_to(css)
            if el is None:
                return
            el.send_keys(Keys.ENTER)
        else:
            self.one(css).click()
        WebDriverWait(self.d, 20).until(left_behind(old))
        WebDriverWait(self.d, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    def fill(self, css, text):
        if self.mode == "keyboard":
            el = self.tab_to(css)
            if el is not None:
                el.send_keys(Keys.CONTROL, "a")
                el.send_keys(text)
        else:
            el = self.one(css)
            el.clear()
            el.send_keys(text)

    def choose_radio(self, css):
        """Selects a radio: click its label, or (keyboard) Tab to it and Space."""
        if self.mode == "keyboard":
            el = self.tab_to(css)
            if el is not None:
                el.send_keys(Keys.SPACE)
        else:
            rid = self.one(css).get_attribute("id")
            self.one(f"label[for='{rid}']").click()

    def choose_option(self, select_css, value):
        if self.mode == "keyboard":
            el = self.tab_to(select_css)
            if el is None:
                return
            # A select moves through its options with the arrow keys.
            options = [o.get_attribute("value") for o in el.find_elements(By.TAG_NAME, "option")]
            current = Select(el).first_selected_option.get_attribute("value")
            steps = options.index(value) - options.index(current)
            for _ in range(abs(steps)):
                el.send_keys(Keys.ARROW_DOWN if steps > 0 else Keys.ARROW_UP)
        else:
            Select(self.one(select_css)).select_by_value(value)

    def submit(self, form_css):
        self.press(f"{form_css} button[type=submit]")

    # -- what every page must pass ---------------------------------------------------

    def audit(self, label, shot=None):
        """axe-core (JavaScript on), reflow at 320 px, and a screenshot."""
        check(f"{self.mode}: {label} has one h1", len(self.d.find_elements(By.TAG_NAME, "h1")) == 1, self.path())
        if self.mode != "js":
            return
        self.d.execute_script(self.axe_source)
        result = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
            ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,"
            " nodes: v.nodes.map(n => n.target.join(' '))}))))"
            ".catch(e => done([{id: 'axe-error', nodes: [String(e)]}]));",
            AXE_TAGS,
        )
        check(f"axe: {label} ({self.path()})", result == [], json.dumps(result))
        audited.append(label)
        if shot and self.shots:
            self.d.save_screenshot(os.path.join(self.shots, f"{shot}.png"))
        # Reflow: at 320 CSS pixels nothing scrolls sideways.
        # (A headless window cannot be made that narrow; the viewport is emulated.)
        self.d.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 320, "height": 800, "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.2)
        overflow = self.d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
        check(f"reflow 320px: {label}", overflow <= 0, f"{overflow}px too wide on {self.path()}")
        if shot in ("home", "record-lab-results") and self.shots:
            self.d.save_screenshot(os.path.join(self.shots, f"{shot}-320px.png"))
        self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


audited = []


def banner(p):
    texts = p.texts(".banner-success")
    return texts[0] if texts else ""


def run_flows(p, sandbox, patient):
    mode = p.mode
    me = f"Patient/{patient}"

    # Sign in: the portal's button, then the sandbox's patient picker.
    p.get("/")
    check(f"{mode}: sign-in page", p.h1() == "Sign in to your patient portal", p.h1())
    p.audit("sign-in page", "sign-in")
    p.press("a.button-start")
    check(f"{mode}: sandbox picker", "Sandbox EHR sign-in" in p.d.page_source, p.d.current_url)
    p.press(f"button[value='{patient}']")
    check(f"{mode}: signed in to home", p.h1() == "Your health at a glance", p.h1())
    p.audit("home", "home")
    if mode == "keyboard":
        # The first Tab reaches the skip link, which moves focus to the content.
        p.get("/")
        ActionChains(p.d).send_keys(Keys.TAB).perform()
        active = p.d.switch_to.active_element
        check("keyboard: skip link first", active.get_attribute("class") == "skip-link", active.tag_name)
        p.check_focus_visible(active, "a.skip-link")
        active.send_keys(Keys.ENTER)
        check("keyboard: skip link moves to main", p.d.switch_to.active_element.get_attribute("id") == "main", "")
    if mode == "js":
        # The session-timeout warning is armed (shown by the script before the end).
        warning = p.one("#timeout-warning")
        check("js: timeout warning armed", int(warning.get_attribute("data-expires-in")) > 0, "")
        # As if the session ended within the warning time: the page's own script, run
        # again, shows the warning and moves focus to it.
        p.d.execute_script(
            "const w = document.getElementById('timeout-warning');"
            "w.setAttribute('data-expires-in', '60'); w.setAttribute('data-warn', '120');"
            "const s = document.createElement('script'); s.src = arguments[0];"
            "document.body.appendChild(s);",
            p.url("/assets/portal.js"),
        )
        time.sleep(0.5)
        check("js: timeout warning shown", warning.is_displayed(), "")
        check(
            "js: focus on the warning",
            p.d.switch_to.active_element.get_attribute("id") == "timeout-title",
            p.d.switch_to.active_element.tag_name,
        )
        p.audit("timeout warning shown", "timeout-warning")
        p.press("#timeout-warning button[type=submit]")
        check("js: stayed signed in", banner(p) == "You are still signed in.", banner(p))
        p.get("/")

    # The record with its charts.
    p.get("/record/lab-results")
    check(f"{mode}: lab charts", len(p.d.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 1, p.path())
    p.audit("lab results", "record-lab-results")
    p.get("/record/vital-signs")
    p.audit("vital signs", "record-vital-signs")

    # Book.
    def mine():
        return {a["id"]: a for a in sandbox.search("Appointment", patient=patient)}

    before = mine()
    p.get("/appointments/find")
    p.audit("find a time", "appointments-find")
    slot = p.one("input[name=slot_id]").get_attribute("value")
    p.choose_radio("input[name=slot_id]")
    p.fill("#reason", "Annual check-up")
    p.submit("form[action$='/appointments/book']")
    check(f"{mode}: booked banner", banner(p) == "Your appointment is booked.", banner(p))
    p.audit("appointments after booking", "appointments")
    new = [a for i, a in mine().items() if i not in before]
    check(f"{mode}: one appointment booked", len(new) == 1 and new[0]["status"] == "booked", json.dumps(new)[:300])
    check(
        f"{mode}: on the chosen slot",
        bool(new) and new[0].get("slot", [{}])[0].get("reference") == f"Slot/{slot}",
        slot,
    )
    booked = new[0]["id"] if new else None

    # A slot error state, for axe: the form sent without a time.
    p.get("/appointments/find")
    p.submit("form[action$='/appointments/book']")
    check(f"{mode}: choose-a-time error", "Choose a time" in p.texts(".error-summary li"), p.texts(".error-summary li"))
    p.audit("find a time, with an error", "appointments-error")

    # Reschedule it.
    if booked:
        before = mine()
        p.get("/appointments")
        p.press(f"a[href$='/appointments/{booked}/reschedule']")
        check(f"{mode}: reschedule page", p.h1() == "Move an appointment", p.h1())
        p.audit("reschedule")
        p.choose_radio("form[method=post] input[name=slot_id]")
        p.submit(f"form[method=post][action$='/appointments/{booked}/reschedule']")
        check(f"{mode}: moved banner", banner(p) == "Your appointment has been moved.", banner(p))
        now = mine()
        check(f"{mode}: old one cancelled", now[booked]["status"] == "cancelled", now[booked]["status"])
        moved = [a for i, a in now.items() if i not in before]
        check(f"{mode}: new one booked", len(moved) == 1 and moved[0]["status"] == "booked", str(len(moved)))
        booked = moved[0]["id"] if moved else None

    # Cancel it, with a reason.
    if booked:
        p.get("/appointments")
        p.press(f"a[href$='/appointments/{booked}/cancel']")
        check(f"{mode}: cancel page", p.h1() == "Cancel an appointment", p.h1())
        p.audit("cancel")
        p.fill("#reason", "I feel better")
        p.submit("main form")
        check(f"{mode}: cancelled banner", banner(p) == "Your appointment has been cancelled.", banner(p))
        check(f"{mode}: cancelled in the EHR", sandbox.read("Appointment", booked)["status"] == "cancelled", booked)

    # A refill, then the same refill refused with its reason.
    def tasks():
        return [t for t in sandbox.search("Task", patient=patient) if t.get("for", {}).get("reference") == me]

    p.get("/medications")
    p.audit("medications", "medications")
    links = p.d.find_elements(By.CSS_SELECTOR, "a[href$='/refill']")
    check(f"{mode}: a refill can be asked for", bool(links), p.path())
    if links:
        href = urllib.parse.urlsplit(links[0].get_attribute("href")).path
        count = len(tasks())
        p.press(f"main a[href='{href}']")
        check(f"{mode}: refill page", p.h1() == "Ask for a refill", p.h1())
        p.audit("refill form")
        p.fill("#pharmacy", "Main Street Pharmacy")
        p.submit("main form")
        check(f"{mode}: refill banner", banner(p) == "Your refill request has been sent to your care team.", banner(p))
        check(f"{mode}: one task", len(tasks()) == count + 1, str(len(tasks())))
        p.get(href)
        p.submit("main form")
        errors = p.texts(".error-summary li")
        check(
            f"{mode}: refused refill says why",
            bool(errors) and "already been asked for" in errors[0],
            str(errors),
        )
        p.audit("refused refill", "refill-refused")
        check(f"{mode}: still one task", len(tasks()) == count + 1, str(len(tasks())))

    # A referral.
    count = len(sandbox.search("ServiceRequest", patient=patient))
    p.get("/referrals/new")
    p.audit("referral form", "referral-form")
    specialty = p.d.find_elements(By.CSS_SELECTOR, "#specialty option")[1].get_attribute("value")
    p.choose_option("#specialty", specialty)
    p.fill("#reason", "Knee pain when running")
    p.submit("main form")
    check(f"{mode}: referral banner", banner(p) == "Your referral request has been sent.", banner(p))
    p.audit("referrals", "referrals")
    check(f"{mode}: referral stored", len(sandbox.search("ServiceRequest", patient=patient)) == count + 1, "")

    # A thread with the care team, and a reply.
    def messages():
        return len(sandbox.search("Communication", patient=patient))

    count = messages()
    p.get("/messages/new")
    p.audit("new message")
    recipient = [
        o.get_attribute("value")
        for o in p.d.find_elements(By.CSS_SELECTOR, "#recipient option")
        if o.get_attribute("value").startswith("Practitioner/")
    ][0]
    p.choose_option("#recipient", recipient)
    p.fill("#topic", "A question about my results")
    p.fill("#text", "Is my glucose fine?")
    p.submit("main form")
    check(f"{mode}: thread page", p.h1() == "A question about my results", p.h1())
    check(f"{mode}: message stored", messages() > count, "")
    count = messages()
    p.fill("#text", "Should I fast before the next test?")
    p.submit("main form")
    check(f"{mode}: reply banner", banner(p) == "Your reply has been sent.", banner(p))
    check(f"{mode}: reply stored", messages() == count + 1, "")
    p.audit("thread", "messages-thread")
    p.get("/messages")
    p.audit("messages", "messages")

    # Pay part of a bill.
    p.get("/bills")
    p.audit("bills", "bills")
    pay = p.d.find_elements(By.CSS_SELECTOR, "a[href$='/pay']")
    check(f"{mode}: a payable bill", bool(pay), "")
    if pay:
        href = urllib.parse.urlsplit(pay[0].get_attribute("href")).path
        account = href.split("/")[-2]
        before = len(sandbox.search("PaymentReconciliation"))
        p.press(f"main a[href='{href}']")
        p.audit("pay form", "pay-form")
        p.fill("#amount", "1.50")
        p.choose_radio("input[name=payment_token][value=tok_ok]")
        p.submit("main form")
        check(f"{mode}: receipt", p.h1() == "Payment receipt", p.h1())
        p.audit("receipt", "bills-receipt")
        after = sandbox.search("PaymentReconciliation")
        check(f"{mode}: one payment recorded", len(after) == before + 1, str(len(after)))
        check(
            f"{mode}: for the account",
            any(
                d.get("request", {}).get("reference") == f"Account/{account}"
                for r in after
                for d in r.get("detail", [])
            ),
            account,
        )

    # The rest of the pages.
    for path, label, shot in [
        ("/record", "record", None),
        ("/download", "download", None),
        ("/download/summary", "summary", "summary"),
        ("/profile", "profile", "profile"),
        ("/session", "session", None),
        ("/no-such-page", "not found", None),
    ]:
        p.get(path)
        p.audit(label, shot)

    # The print button exists only when the script runs (JavaScript really is on/off).
    p.get("/download/summary")
    shown = p.one("[data-print]").is_displayed()
    check(f"{mode}: print button only with JavaScript", shown == (mode != "nojs"), str(shown))

    # Spanish.
    p.get("/?lang=es")
    check(f"{mode}: Spanish", p.h1() == "Su salud de un vistazo", p.h1())
    p.audit("home in Spanish", "home-es")
    p.get("/medications")
    p.audit("medications in Spanish")
    p.get("/?lang=en")

    # Sign out.
    p.get("/")
    p.submit("form.sign-out")
    check(f"{mode}: signed out", p.h1() == "You have signed out", p.h1())
    p.audit("signed out")
    p.get("/appointments")
    check(f"{mode}: no session afterwards", p.h1() == "Sign in to your patient portal", p.h1())


def display_name(patient):
    name = patient["name"][0]
    return " ".join(name.get("given", []) + [name["family"]])


def run_proxy_flow(p, sandbox):
    """A parent signs in for two children: every page names the child shown, the
    profile lists the children (not the one who came of age) by name and access, and
    switching changes whose pages these are."""
    mode = p.mode
    child = display_name(sandbox.read("Patient", "fam-child"))
    teen = display_name(sandbox.read("Patient", "fam-teen"))
    adult = display_name(sandbox.read("Patient", "fam-adult-child"))
    p.get("/")
    p.press("a.button-start")
    p.press("button[value='proxy-rivera-parent']")
    check(f"{mode}: proxy signed in", p.h1() == "Your health at a glance", p.h1())
    acting = " ".join(p.texts(".acting-for"))
    check(f"{mode}: the page names the child shown", child in acting, acting)
    p.audit("home, acting for a child", "proxy-home")
    p.get("/profile")
    labels = " ".join(p.texts(".radio-label"))
    check(f"{mode}: profile lists the children", child in labels and teen in labels, labels)
    check(f"{mode}: not the child who came of age", adult not in labels, labels)
    check(f"{mode}: access levels named", "full access" in labels, labels)
    headings = p.texts("main h2")
    check(f"{mode}: the details are the patient's, not 'About you'",
          "About the patient you act for" in headings and "About you" not in headings, str(headings))
    p.audit("profile, acting for others", "proxy-profile")
    if mode == "keyboard":
        # In a radio group Tab reaches the checked radio; the arrow keys move the choice.
        el = p.tab_to("input[name=patient]:checked")
        if el is not None:
            el.send_keys(Keys.ARROW_DOWN)
        chosen = p.one("input[name=patient]:checked").get_attribute("value")
        check("keyboard: arrow key chooses the teen", chosen == "fam-teen", chosen)
    else:
        p.choose_radio("input[name=patient][value='fam-teen']")
    p.submit("form[action$='/profile/patient']")
    acting = " ".join(p.texts(".acting-for"))
    check(f"{mode}: switched to the teen", teen in acting, acting)
    p.get("/record/conditions")
    acting = " ".join(p.texts(".acting-for"))
    check(f"{mode}: the record page names the teen", teen in acting, acting)
    confidential = sandbox.read("Condition", "cond-fam-teen-rh1")
    texts = [c.get("display") for c in confidential["code"].get("coding", [])]
    texts = [t for t in texts + [confidential["code"].get("text")] if t]
    check(f"{mode}: the teen's confidential condition is not shown",
          not any(t in p.d.page_source for t in texts), str(texts))
    p.get("/")
    p.submit("form.sign-out")
    check(f"{mode}: proxy signed out", p.h1() == "You have signed out", p.h1())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--ehr", required=True)
    parser.add_argument("--system-secret", required=True)
    parser.add_argument("--axe", required=True, help="path of axe.min.js")
    parser.add_argument("--screenshots", help="where to write the main pages' screenshots")
    parser.add_argument("--modes", default="js,nojs,keyboard")
    args = parser.parse_args()
    with open(args.axe, encoding="utf-8") as f:
        axe_source = f.read()
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
    sandbox = Sandbox(args.ehr, args.system_secret)
    patients = {"js": "pat-1", "nojs": "pat-2", "keyboard": "pat-3"}
    for mode in args.modes.split(","):
        print(f"== {mode}", flush=True)
        p = Portal(args.gateway, mode, axe_source, args.screenshots if mode == "js" else None)
        try:
            run_flows(p, sandbox, patients[mode])
            run_proxy_flow(p, sandbox)
        except (WebDriverException, AssertionError, KeyError, IndexError, ValueError) as e:
            failures.append(f"{mode}: {type(e).__name__}: {e}")
            traceback.print_exc()
            try:
                p.d.save_screenshot(f"/tmp/portico-browser-{mode}-failure.png")
            except WebDriverException:
                pass
        finally:
            p.close()
    print(f"axe ran on {len(audited)} pages: 0 violations allowed at {', '.join(AXE_TAGS)}")
    print(f"{passed} passed, {len(failures)} failed")
    for f in failures:
        print(f"  - {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
