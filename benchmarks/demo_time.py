"""End-to-end time and peak memory of ``fcpts demo`` (run it on a quiet machine: it is a wall-clock number).

Runs ``python -m fcpts demo --quiet --out <tmp>`` in a subprocess from the repository root and records its
wall time, CPU time and peak resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the demo
is this script's only child, so that is the demo's own peak), the table the demo printed, and whether the
embedded dense checkpoint was already cached (if not, the time includes training it, ~minutes).

    python -m benchmarks.demo_time                      # -> benchmarks/results/demo_time.json
    python -m benchmarks.demo_time --threads 2 -- --targets 0.8 0.9

Anything after ``--`` is passed on to ``fcpts demo``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import RESULTS, ROOT, embedded_checkpoint_path, envelope, loadavg, write_json

OUT = RESULTS / "demo_time.json"


def time_command(cmd: list[str], env: dict | None = None, cwd: Path = ROOT, timeout: float | None = None) -> dict:
    """Wall time, child CPU time and the child's peak RSS (MiB) of one command; its output too."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = after.ru_maxrss  # max over waited-for children: the largest child so far
    peak_mib = peak / 1024 if sys.platform != "darwin" else peak / 2**20
    return dict(cmd=cmd, returncode=done.returncode, wall_s=wall, user_s=after.ru_utime - before.ru_utime,
                sys_s=after.ru_stime - before.ru_stime, peak_rss_mib=peak_mib, stdout=done.stdout,
                stderr_tail=done.stderr[-4000:])


def run_demo_time(demo_args: list[str] | None = None, threads: int | None = None, out: str | Path | None = OUT,
                  module: str = "fcpts", subcommand: list[str] | None = None, keep_output: bool = False) -> dict:
    """Time ``python -m <module> demo ...`` (``subcommand`` replaces ``["demo", "--quiet"]``, e.g. in tests)."""
    work = RESULTS / "tmp_demo"  # git-ignored (benchmarks/results/tmp*)
    if work.exists():
        shutil.rmtree(work)
    cmd = [sys.executable, "-m", module] + (subcommand if subcommand is not None else ["demo", "--quiet", "--out", str(work)])
    cmd += list(demo_args or [])
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cached = embedded_checkpoint_path().exists()
    load_before = loadavg()
    record = time_command(cmd, env)
    demo_json = work / "demo.json"
    record["demo_rows"] = json.loads(demo_json.read_text())["rows"] if demo_json.exists() else None
    if work.exists() and not keep_output:
        shutil.rmtree(work)
    settings = dict(threads=threads, demo_args=list(demo_args or []), checkpoint_cached_before=cached,
                    loadavg_before=load_before)
    doc = envelope("demo_time", settings, record)
    if out is not None:
        write_json(doc, out)
    if record["returncode"] != 0:
        raise RuntimeError(f"the demo failed ({record['returncode']}):\n{record['stderr_tail']}")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of the demo (default: torch's)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--keep-output", action="store_true", help="keep the demo's folder (benchmarks/results/tmp_demo)")
    parser.add_argument("demo_args", nargs="*", help="after --: arguments for `fcpts demo`")
    args = parser.parse_args(argv)
    if not embedded_checkpoint_path().exists():
        print("note: the embedded dense checkpoint is not cached; the time will include training it "
              "(run `python -m fcpts train-dense` first to time the demo alone)", file=sys.stderr)
    doc = run_demo_time(args.demo_args, args.threads, args.out, keep_output=args.keep_output)
    r = doc["results"]
    print(r["stdout"])
    print(f"wall {r['wall_s']:.1f} s, CPU {r['user_s'] + r['sys_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
