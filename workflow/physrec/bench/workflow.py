"""`physrec bench workflow`: the workflow layer at scale, a dataset of many tiny motions through
Snakemake.

Prints, for N motions (10,000 by default): the DAG build from scratch (a dry run before
anything exists), index + split, the DAG build once the plan exists, the full run, a
no-op rerun, and the dry run after adding one motion (which must re-record one batch).
Each motion is 2 frames of the demo's standing pose on a 4 x 4 flat terrain, so the
figures are the workflow's own costs, not the recording's.

    physrec bench workflow --motions 10000 --dir /tmp/physrec-10k [--cores 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import yaml

from physrec import demo
from physrec.formats.dataset_yaml import write_dataset
from physrec.formats.motion_file import MotionFile, write_motion_file

REPO = Path(__file__).resolve().parents[3]


def tiny_motion(i: int):
    """The demo's standing pose for 2 frames (1/30 s), shifted per motion so files differ."""
    return demo._motion(demo._still(0.01 * (i % 10), 0.0, 1.0 / demo.FPS), demo.flat_terrain())


def scaffold(root: Path, cfg: dict, motions: Iterable[tuple[str, MotionFile]]) -> Path:
    """A project folder: the repo's Snakefile and rules, `cfg` as config/config.yaml, and the
    motion files (relative path, content) listed in data/dataset.yaml."""
    if root.exists():
        shutil.rmtree(root)
    (root / "workflow").mkdir(parents=True)
    shutil.copy2(REPO / "Snakefile", root / "Snakefile")
    for sub in ("rules", "schemas", "report"):
        shutil.copytree(REPO / "workflow" / sub, root / "workflow" / sub)
    shutil.copytree(REPO / "envs", root / "envs")
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    entries = []
    for rel, mf in motions:
        write_motion_file(root / "data" / rel, mf)
        entries.append((rel, 1.0))
    write_dataset(root / "data" / "dataset.yaml", entries)
    return root


def make_project(root: Path, n: int) -> Path:
    """N tiny motions, recorded from their start only, no videos: the scheduling at scale."""
    cfg = {"results_dir": "results", "iterations": [{"name": "iter0", "dataset": "data/dataset.yaml"}],
           "record": {"threads": 1, "start_fractions": []}, "report": {"videos": "none"}}
    return scaffold(root, cfg, ((f"m{i // 1000:02d}/m{i:05d}.pkl", tiny_motion(i)) for i in range(n)))


def snakemake(root: Path, cores: int, *args: str) -> tuple[float, str]:
    """Seconds and output of one Snakemake run in `root`."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), *args], cwd=root, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall, r.stdout + r.stderr


def jobs(output: str, rule: str) -> int:
    m = re.search(rf"^{rule}\s+(\d+)$", output, re.M)
    return int(m.group(1)) if m else 0


def mean_job_seconds(root: Path, rule: str) -> tuple[int, float]:
    """(jobs, mean wall seconds) of a rule's jobs, from Snakemake's benchmark files: the job's
    own time, apart from Snakemake's scheduling between jobs."""
    times = [float(p.read_text().splitlines()[1].split("\t")[0])
             for p in (root / "benchmarks" / "iter0" / rule).glob("*.tsv")]
    return len(times), sum(times) / max(1, len(times))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--motions", type=int, default=10000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/physrec-bench-workflow"))
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)


def run(a: argparse.Namespace) -> None:
    start = time.perf_counter()
    root = make_project(a.dir, a.motions)
    print(f"{a.motions} motions written in {time.perf_counter() - start:.1f} s ({root})", flush=True)
    figures = {}
    figures["DAG build from scratch (dry run)"], _ = snakemake(root, a.cores, "-n")
    figures["index + split"], _ = snakemake(root, a.cores, "--until", "split")
    figures["DAG build with the plan (dry run)"], out = snakemake(root, a.cores, "-n")
    batches = jobs(out, "record")
    for name in list(figures):
        print(f"{name}: {figures[name]:.1f} s", flush=True)
    print(f"{batches} record jobs planned", flush=True)
    figures["full run"], _ = snakemake(root, a.cores)
    print(f"full run: {figures['full run']:.1f} s", flush=True)
    for rule in ("record", "select"):
        n, mean = mean_job_seconds(root, rule)
        print(f"  {n} {rule} jobs, {mean:.2f} s each on average (Snakemake's benchmark files)", flush=True)
    figures["no-op rerun"], out = snakemake(root, a.cores)
    assert "Nothing to be done" in out, out[-2000:]
    print(f"no-op rerun: {figures['no-op rerun']:.1f} s", flush=True)
    i = a.motions
    rel = f"added/m{i:05d}.pkl"
    write_motion_file(root / "data" / rel, tiny_motion(i))
    with open(root / "data" / "dataset.yaml", "a") as f:  # the same entry format write_dataset uses
        f.write(f"- file: {rel}\n  weight: 1.0\n")
    wall, out = snakemake(root, a.cores, "--until", "split")
    dry, out = snakemake(root, a.cores, "-n")
    print(f"add one motion: index + split {wall:.1f} s, then a dry run of {dry:.1f} s plans "
          f"{jobs(out, 'record')} record job(s)", flush=True)
