"""The demo's own scripts, pointed at the balancer: the portal walkthrough (a cookie login,
then every portal write with its Idempotency-Key checks) and the SMART login through the
facade. Round-robin means their consecutive requests land on different replicas, which
nginx's access log (the upstream of every request) shows."""

import os
import subprocess
import sys
from collections import Counter

from fleet import ROOT, expect, note

NAME = "the walkthrough and a SMART login through the balancer"


def upstreams(fleet, skip):
    with open(os.path.join(fleet.work, "nginx", "access.log")) as f:
        lines = f.read().splitlines()[skip:]
    return [line.rsplit("upstream=", 1)[1] for line in lines if "upstream=" in line]


def script(*args):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=90)
    if out.returncode != 0:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
    return out


def appointments(fleet, patient):
    return Counter(a["status"] for a in
                   fleet.ehr_search(f"Appointment?patient=Patient/{patient}&_count=200"))


def referrals(fleet, patient):
    return len(fleet.ehr_search(f"ServiceRequest?patient=Patient/{patient}&_count=200"))


def run(fleet):
    skip = len(upstreams(fleet, 0))
    booked_before, referred_before = appointments(fleet, "pat-1"), referrals(fleet, "pat-1")
    out = script("scripts/portal-walkthrough.py", "--gateway", fleet.lb, "--patient", "pat-1")
    expect(out.returncode == 0 and "all checks passed" in out.stdout,
           f"scripts/portal-walkthrough.py --gateway {fleet.lb}: "
           f"{out.stdout.count('  ok:')} checks passed")
    booked = appointments(fleet, "pat-1")
    expect(booked["booked"] == booked_before["booked"] + 1
           and booked["cancelled"] == booked_before["cancelled"] + 2,
           "in the EHR: one booking more and two cancelled (book + cancel, book + "
           "reschedule; the replayed booking made nothing)")
    expect(referrals(fleet, "pat-1") == referred_before + 1, "in the EHR: one referral more")
    served = upstreams(fleet, skip)
    counts = Counter(served)
    replicas = {r.removeprefix("http://") for r in fleet.replicas}
    note(f"nginx sent its {len(served)} requests to {dict(counts)}")
    expect(set(counts) == replicas and min(counts.values()) >= len(served) // 5,
           "every replica served a share of them (round-robin)")
    repeats = sum(1 for a, b in zip(served, served[1:]) if a == b)
    expect(repeats == 0, "no two consecutive requests went to the same replica")

    out = script("scripts/smart-login.py", "--ehr", fleet.ehr, "--fhir", f"{fleet.lb}/fhir",
                 "--patient", "pat-2")
    expect(out.returncode == 0 and out.stdout.rstrip().endswith("ok"),
           "scripts/smart-login.py --fhir <balancer>/fhir: discovery, PKCE login, reads")
