#!/usr/bin/env bash
# Validates docs/openapi.json (the portal API's document, kept equal to the code by an
# integration test) against the OpenAPI 3.1 specification with openapi-spec-validator,
# installed from PyPI into target/openapi-venv on first use. In CI a failure to install
# is fatal; on a machine without PyPI access it is skipped with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.9.0
VENV=target/openapi-venv
if [ ! -x "$VENV/bin/openapi-spec-validator" ]; then
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "openapi-spec-validator==$VERSION"; }; then
    if [ "${CI:-}" = "true" ]; then
      echo "check-openapi: cannot install openapi-spec-validator" >&2
      exit 1
    fi
    echo "check-openapi: openapi-spec-validator unavailable; skipped" >&2
    exit 0
  fi
fi
"$VENV/bin/openapi-spec-validator" docs/openapi.json
