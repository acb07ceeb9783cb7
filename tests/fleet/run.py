#!/usr/bin/env python3
"""Runs the fleet checks against a detached fleet (scripts/fleet.sh --detach), in order,
each one after the other even when one fails, and exits 1 if any failed.

    python3 tests/fleet/run.py --state target/fleet.state [--only paging,redis]

scripts/fleet-test.sh starts the fleet, runs this and stops the fleet.
"""

import argparse
import importlib
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fleet import CheckFailed, Fleet  # noqa: E402

# Order matters: the last two restart gateways and Redis.
CHECKS = ["balancer", "sessions", "same_slot", "idempotency", "paging", "redis"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", required=True, help="the state file of a detached fleet")
    ap.add_argument("--only", help="comma-separated checks to run (default: all): " + ", ".join(CHECKS))
    args = ap.parse_args()
    wanted = args.only.split(",") if args.only else CHECKS
    unknown = [w for w in wanted if w not in CHECKS]
    if unknown:
        ap.error(f"unknown checks: {', '.join(unknown)}")

    fleet = Fleet(args.state)
    print(f"fleet: {len(fleet.replicas)} replicas behind {fleet.lb}, sandbox {fleet.ehr}", flush=True)
    failed = []
    started = time.monotonic()
    for name in wanted:
        module = importlib.import_module(f"test_{name}")
        print(f"\n[{name}] {module.NAME}", flush=True)
        t0 = time.monotonic()
        try:
            module.run(fleet)
        except CheckFailed as e:
            failed.append(name)
            print(f"    FAIL: {e}", flush=True)
        except Exception:  # noqa: BLE001 - report and go on with the next check
            failed.append(name)
            print("    FAIL: unexpected error", flush=True)
            traceback.print_exc(file=sys.stdout)
        finally:
            try:
                fleet.clear_faults()
            except Exception:  # noqa: BLE001
                pass
        print(f"  [{name}] {'FAILED' if name in failed else 'passed'} in {time.monotonic() - t0:.1f}s",
              flush=True)
    passed = len(wanted) - len(failed)
    print(f"\nfleet tests: {passed} passed, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + ')' if failed else ''} in {time.monotonic() - started:.1f}s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
