#!/bin/bash
# The Python tools the tests use, from PyPI into a private virtualenv
# (target/python): openapi-spec-validator checks the API's OpenAPI
# document. Pinned; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python
want="openapi-spec-validator==0.9.0"
if [ -x "$venv/bin/openapi-spec-validator" ] && "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$want"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$want"
