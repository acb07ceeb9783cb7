#!/usr/bin/env bash
# The whole test suite: every crate's unit tests, the integration-test binary (the real
# router against the sandbox EHR), then a smoke test of `portico demo` driven by a real
# SMART authorization-code + PKCE login, and the fleet tests (three gateways sharing a real
# Redis behind nginx round-robin, scripts/fleet-test.sh). The portal API's OpenAPI document
# is also validated against the OpenAPI 3.1 schema, deploy/ is checked
# (scripts/check-deploy.sh), the interop scenarios run, and last a smoke run of the
# benchmark script (scripts/bench.sh --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-targets
scripts/check-openapi.sh
# deploy/: the Containerfile linted, the Kubernetes manifests validated offline against
# the API schemas, deploy/kubernetes/portico.toml through check-config.
scripts/check-deploy.sh
scripts/demo-smoke.sh
# A fleet on 127.0.0.1 (scripts/fleet.sh: Redis, the sandbox, three gateways, nginx), checked
# from outside: logins, writes and paging links across replicas, EHR faults, Redis down.
scripts/fleet-test.sh
# The patient portal's pages in headless Chromium: every flow with JavaScript on, off and
# keyboard-only, axe-core on every page (tests/browser/). Run it alone to refresh the
# screenshots in docs/portal/; here they are not written, so the tree stays clean.
SCREENSHOTS=0 scripts/browser-tests.sh
# The gateway against third-party servers, authorization server and client libraries
# (docs/INTEROP.md); installs its pinned peers into .interop/ on first use.
scripts/interop.sh
# The benchmark script on the debug build with a tiny dataset (1 s per load point), so that
# it never rots; its figures mean nothing. Builds the load generator (oha) once into
# target/bench-tools.
scripts/bench.sh --smoke --out "${CARGO_TARGET_DIR:-target}/bench-smoke"
