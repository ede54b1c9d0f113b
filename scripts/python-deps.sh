#!/bin/bash
# The Python tools the tests use, from PyPI into a private virtualenv
# (target/python): openapi-spec-validator checks the API's OpenAPI
# document; the CloudStack clients `cs` and Apache Libcloud drive the
# CloudStack API. Pinned; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python
want=(openapi-spec-validator==0.9.0 cs==5.2.0 apache-libcloud==3.9.1)
if [ -x "$venv/bin/pip" ]; then
  have=$("$venv/bin/pip" freeze 2>/dev/null)
  missing=0
  for w in "${want[@]}"; do
    grep -qix "$w" <<<"$have" || missing=1
  done
  [ "$missing" = 0 ] && exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "${want[@]}"
