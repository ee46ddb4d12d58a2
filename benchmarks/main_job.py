"""The main job's wall-clock, before and after the canonical CPU settings, side by side.

    .venv/bin/python benchmarks/main_job.py [--benchmark split_digits] [--before-code DIR] [--no-report]

Runs `esacl paper --benchmark B --report` (what `./workbench.sh main` runs, the environment built) twice,
one after the other, each into a fresh folder, and prints both wall-clocks and their ratio:
- before: one run at a time with two threads each in NCHW format (`--workers 1 -p threads 2 -p
  channels_last false`), the defaults until the canonical settings; with `--before-code DIR`, the
  checkout at DIR instead, with its own defaults (for instance a worktree of an older commit);
- after: this checkout's defaults (on a CPU one single-thread run per usable core, channels_last).
Run it on an otherwise idle machine: it prints the load average before each job.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def job(label: str, code: Path, extra: list[str], benchmark: str, report: bool, folder: Path) -> float:
    """Seconds for one `esacl paper` job of `code` (a checkout) into `folder`; its table goes to a log."""
    out = folder / f"{label}-runs"
    argv = [sys.executable, "-m", "workbench", "paper", "--benchmark", benchmark, "--out", str(out), *extra]
    env = dict(os.environ, PYTHONPATH=str(code))
    load = os.getloadavg()[0]
    tic = time.perf_counter()
    with open(folder / f"{label}.log", "w") as log:
        # cwd is the folder: the report goes to its reports/
        done = subprocess.run(argv + (["--report"] if report else []), cwd=folder, env=env, stdout=log, stderr=log)
    seconds = time.perf_counter() - tic
    if done.returncode:
        sys.exit(f"{label} failed (exit {done.returncode}): see {folder / f'{label}.log'}")
    print(f"{label:7s} {seconds:7.1f} s   load average before {load:.2f}   ({' '.join(extra) or 'defaults'})")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--before-code", type=Path, help="a checkout whose defaults are 'before' (default: this one)")
    parser.add_argument("--no-report", action="store_true", help="time the runs and the table only")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="esacl-main-job-"))
    print(f"esacl paper --benchmark {args.benchmark}{'' if args.no_report else ' --report'}; logs in {folder}")
    before_extra = [] if args.before_code else ["--workers", "1", "-p", "threads", "2", "-p", "channels_last", "false"]
    before = job("before", args.before_code or ROOT, before_extra, args.benchmark, not args.no_report, folder)
    after = job("after", ROOT, [], args.benchmark, not args.no_report, folder)
    print(f"after / before: {after / before:.2f}x the wall-clock ({before / after:.2f}x sooner)")


if __name__ == "__main__":
    main()
