"""Instructions per ``with pool.get()`` cycle, counted by valgrind's callgrind.

Wall-clock figures swing 2-4x on a shared 2-core machine; instruction counts
do not (the same interpreter, code and inputs count the same, whatever the
neighbours do). So this compares two versions of the pool in one run::

    python benchmarks/bench_instructions.py                 # this tree against main
    python benchmarks/bench_instructions.py --base 9a931e3  # against any revision
    python benchmarks/bench_instructions.py --quick         # fewer cycles (a smoke run)

For each version (the working tree, and ``--base`` checked out into a
temporary directory with ``git worktree``) it runs, under ``valgrind
--tool=callgrind``, a loop of N and then 2N checkout/return cycles on an idle
pool with its default options and a stand-in connection, and takes the
difference: the interpreter's start-up, the imports and the pool's
construction cancel out, and (I(2N) - I(N)) / N is what one cycle costs. It
prints both counts and their ratio (this tree / base; the goal is <= 1.00).
``PYTHONHASHSEED=0`` keeps the runs alike. Needs valgrind and git.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOOP = """
import sys
from poodle_cherrypy.pool import Pool

class Conn:
    def close(self):
        pass

pool = Pool(Conn, max_size=4)
with pool.get():
    pass  # one connection, opened before the count matters
for _ in range(int(sys.argv[1])):
    with pool.get() as conn:
        pass
"""


def instructions(source: Path, cycles: int, workdir: Path) -> int:
    """Instructions callgrind counts for a run of ``cycles`` cycles of the
    package in ``source``."""
    out = workdir / f"callgrind.{os.getpid()}.{cycles}.{abs(hash(str(source)))}"
    env = {**os.environ, "PYTHONPATH": str(source), "PYTHONHASHSEED": "0"}
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, "-c", LOOP, str(cycles)],
        check=True, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    for line in out.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def per_cycle(source: Path, cycles: int, workdir: Path) -> float:
    """Instructions of one cycle: (I(2N) - I(N)) / N."""
    once, twice = (instructions(source, n, workdir) for n in (cycles, 2 * cycles))
    return (twice - once) / cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", default="main", help="the revision to compare with (main)")
    parser.add_argument("--cycles", type=int, default=20000, help="N (default 20000)")
    parser.add_argument("--quick", action="store_true", help="N = 2000")
    args = parser.parse_args(argv)
    cycles = 2000 if args.quick else args.cycles
    if cycles < 1:
        parser.error(f"--cycles must be >= 1, got {cycles}")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base_tree = workdir / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree),
             args.base],
            check=True, stdin=subprocess.DEVNULL,
        )
        try:
            base = per_cycle(base_tree, cycles, workdir)
            this = per_cycle(ROOT, cycles, workdir)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False, stdin=subprocess.DEVNULL,
            )
    print(f"instructions per 'with pool.get()' cycle on an idle pool, N={cycles}:")
    print(f"  {args.base:>12}: {base:10.1f}")
    print(f"  {'this tree':>12}: {this:10.1f}")
    print(f"  ratio this / {args.base}: {this / base:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
