"""Start-up costs a researcher waits through: `import esacl` against `import torch`.

    .venv/bin/python benchmarks/startup.py [--repeats 7] [--threads 1]

Each import is timed in a fresh interpreter (wall-clock of `python -c "import X"`, interpreter start
included), the two alternating so that a change in the machine's load hits both; prints the median
of `--repeats`, the ratio, and the modules `import esacl` loads beyond torch's that take longest.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def wall(code: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def slowest_extra_imports(env: dict, n: int = 5) -> list[tuple[str, float]]:
    """The modules of `import esacl` with the largest cumulative import time, outside torch."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import esacl"], env=env,
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            if name.split(".")[0] not in ("torch", "esacl") and parts[2].startswith(" "):
                rows.append((name, int(parts[1]) / 1e6))
    top = [r for r in rows if not r[0].startswith("_")]
    return sorted(top, key=lambda r: -r[1])[:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    load = os.getloadavg()[0]
    wall("import torch", env)                                  # warm the file cache for both
    torch_s, esacl_s = [], []
    for _ in range(args.repeats):
        torch_s.append(wall("import torch", env))
        esacl_s.append(wall("import esacl", env))
    t, e = statistics.median(torch_s), statistics.median(esacl_s)
    print(f"fresh interpreter, median of {args.repeats}, OMP_NUM_THREADS={args.threads}")
    print(f"{'import torch':16s}{t:7.2f} s")
    print(f"{'import esacl':16s}{e:7.2f} s   {e / t:.2f}x torch")
    print("slowest imports besides torch's: " + ", ".join(f"{m} {s:.2f} s" for m, s in slowest_extra_imports(env)))
    print(f"{len(os.sched_getaffinity(0))} usable cores; load average before {load:.2f}")


if __name__ == "__main__":
    main()
