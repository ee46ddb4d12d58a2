#!/usr/bin/env bash
# The README's two commands:
#   ./workbench.sh main [BENCHMARK] [--out DIR]
#                                     set up the environment, then the paper's comparison (EsaCL against SparCL
#                                     on each base learner) on split_digits (default) or split_fmnist, and a report;
#                                     with the --out of an interrupted job, it finishes that job
#   ./workbench.sh test               set up the same environment, then run the test suite
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

strip_outputs() {
  # Notebooks are committed without outputs. JupyterLab's autosave writes them into the file, so git
  # strips them on add (`.gitattributes`: notebooks/*.ipynb filter=nbstripout), keeping cell ids, and
  # strips the kernel's language_info a run adds (the kernelspec is this .venv's ipykernel's already).
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    local strip; strip="$(cd "$VENV/bin" && pwd)/nbstripout"
    local keep="--keep-id --extra-keys metadata.language_info"
    git config filter.nbstripout.clean "'$strip' $keep"
    git config filter.nbstripout.smudge cat
    git config diff.ipynb.textconv "'$strip' $keep -t"
  fi
}

assets() {
  # The cartesian plotly.js bundle that exported reports embed (pinned, integrity-checked): fetched here,
  # at set-up, never when a report is written.
  "$VENV/bin/python" -c "from workbench.execute import fetch_plotly_cartesian; fetch_plotly_cartesian()"
}

fmnist() {
  # Split Fashion-MNIST reads Debian's dataset-fashion-mnist (or DATA_ROOT/fashion-mnist): installed here
  # where apt-get runs as root; elsewhere the loader's error says how to get the files.
  local debian=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
  if [ ! -f "$debian" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "data: installing Debian's dataset-fashion-mnist (31 MB)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      dataset-fashion-mnist >/dev/null
  fi
}

case "${1:-}" in
  main)
    shift
    benchmark=split_digits out=
    while [ $# -gt 0 ]; do  # [BENCHMARK] [--out DIR], in either order
      case "$1" in
        --out) [ -n "${2:-}" ] || { echo "workbench.sh: --out needs a folder" >&2; exit 2; }; out=$2; shift 2 ;;
        -*) echo "workbench.sh: unknown option $1; usage: ./workbench.sh main [BENCHMARK] [--out DIR]" >&2; exit 2 ;;
        *) benchmark=$1; shift ;;
      esac
    done
    [ -n "$out" ] || out=runs/paper-$benchmark-$(date +%Y%m%d-%H%M%S)
    setup
    strip_outputs
    assets
    if [ "$benchmark" = split_fmnist ]; then fmnist; fi
    # Every base learner the paper names (EWC, CO2L, ER, DER++) dense, with SparCL and with EsaCL at sparsity
    # 0.9 over seeds 0-9, the dense ones and the bounds (SGD, joint) over 0-2: one table grouped by base learner
    # with a verdict line each, then one HTML report (the table, EsaCL's dashboards at seed 0). The same folder
    # again finishes an interrupted job: complete runs are kept, interrupted ones resume from their checkpoints.
    echo "interrupted? ./workbench.sh main $benchmark --out $out continues the job"
    "$VENV/bin/esacl" paper --benchmark "$benchmark" --out "$out" --report || {
      rc=$?  # 2: a mistake, said in one line; anything else stopped the job part-way
      [ $rc = 2 ] || echo "./workbench.sh main $benchmark --out $out continues the job" >&2
      exit $rc
    }
    ;;
  test)
    setup
    strip_outputs
    assets
    fmnist
    "$VENV/bin/ruff" check --quiet .
    "$VENV/bin/ruff" format --check --quiet .
    "$VENV/bin/python" -m pytest -q
    ;;
  *)
    echo "usage: ./workbench.sh main [split_digits|split_fmnist] [--out DIR] | test" >&2
    exit 2
    ;;
esac
