#!/usr/bin/env bash
# Makes the virtualenv of the bench's hand-rolled script (bench/handrolled.py):
# Python 3 with the clients of bench/requirements.txt, in .local/bench-venv.
# Idempotent: a virtualenv that already has them is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${XMIRROR_BENCH_VENV:-.local/bench-venv}
req=bench/requirements.txt
stamp="$venv/.requirements"
if [[ -x $venv/bin/python ]] && cmp -s "$req" "$stamp" 2>/dev/null; then
  exit 0
fi
python=$(command -v python3 || true)
[[ -n $python ]] || { echo "bench-venv.sh: ERROR: python3 is not installed; install it (apt-get install python3 python3-venv)" >&2; exit 1; }
mkdir -p "$(dirname "$venv")"
if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
  echo "bench-venv.sh: ERROR: $python -m venv $venv failed; install the venv module (apt-get install python3-venv)" >&2
  exit 1
fi
echo "bench-venv.sh: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
