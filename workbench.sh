#!/usr/bin/env bash
# The README's two commands:
#   ./workbench.sh main   set up the environment, then run the split_digits comparison: EsaCL against its baselines
#   ./workbench.sh test   set up the same environment, then run the test suite
# Set-up is idempotent: a second call reuses .venv while requirements.txt and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${ESACL_VENV:-.venv}

setup() {
  local stamp="$VENV/.esacl-setup" want
  want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "environment: reusing $VENV"
    return
  fi
  echo "environment: installing into $VENV (about a minute)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  # The editable install's build backend warns about editable installs on every run: keep its log.
  "$VENV/bin/python" -m pip install -q --no-deps -e . > "$VENV/esacl-install.log" 2>&1 \
    || { cat "$VENV/esacl-install.log"; exit 1; }
  echo "$want" > "$stamp"
}

assets() {
  # The widget manager bundle that exported reports embed (pinned, integrity-checked): fetched here,
  # at set-up, never when a report is written.
  "$VENV/bin/python" -c "from esacl.report import fetch_embed_js; fetch_embed_js()"
}

case "${1:-}" in
  main)
    setup
    assets
    out="runs/main-$(date +%Y%m%d-%H%M%S)"
    # The split_digits notebook through papermill: the baselines, then EsaCL with its sharpness
    # measurements; one comparison table, then one HTML report (comparison + EsaCL's dashboards).
    "$VENV/bin/esacl" notebook split_digits -p method sgd,joint,er,derpp,ewc -p seed 0,1,2 -p landscape false \
      --out "$out" > /dev/null
    "$VENV/bin/esacl" notebook split_digits -p method esacl,esacl-derpp -p seed 0,1,2 -p landscape true \
      --out "$out" > /dev/null
    "$VENV/bin/esacl" compare "$out"
    report=$("$VENV/bin/esacl" report "$out" --title "Split-Digits: EsaCL against its baselines")
    echo "results in $(cd "$out" && pwd)"
    echo "report: $report"
    ;;
  test)
    setup
    assets
    "$VENV/bin/python" -m pytest -q
    ;;
  *)
    echo "usage: ./workbench.sh main|test" >&2
    exit 2
    ;;
esac
