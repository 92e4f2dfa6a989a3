"""`physrec bench batch`: one large record job, N PARC motions in a single batch, through the
workflow.

On a GPU a batch of thousands of motions simulates in seconds, so what the job does around
the physics (reading the motions, preparing the terrains, compiling kernels, writing the
trajectories and the batch's terrain file) decides its time. The motions cycle through the
given PARC files, each copy raised by a tenth of a millimetre more so that every file
differs; the record job's log times each phase, and is printed at the end with the job's
wall time and peak memory (Snakemake's benchmark file).

    physrec bench batch --motions 4096 --files ../shared/parc_samples/TEASER_TERRAIN.pkl \\
        ../shared/parc_samples/civilization.pkl --backend mujoco_warp --device cuda:0 \\
        --tracker parc --model ../shared/parc_samples/oracle/model_seed1.pt --dir /tmp/physrec-batch
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from physrec.bench.workflow import scaffold, snakemake
from physrec.formats.motion_file import MotionFile, read_motion_file

STEP_M = 1e-4  # height added per copy of a source motion: files differ, tracking does not


def copies(files: list[Path], n: int, frames: int | None) -> Iterator[tuple[str, MotionFile]]:
    """(relative path, content) of N motions cycled through `files`, cut to `frames` frames."""
    sources = [read_motion_file(f) for f in files]
    for i in range(n):
        src = sources[i % len(sources)]
        m, k = src.motion, min(frames or src.motion.num_frames, src.motion.num_frames)
        lift = np.float32([0.0, 0.0, STEP_M * (i // len(sources))])
        cut = dataclasses.replace(m, root_pos=m.root_pos[:k] + lift, root_rot=m.root_rot[:k],
                                  joint_rot=m.joint_rot[:k], body_contacts=m.body_contacts[:k])
        yield f"m{i // 1000:02d}/{files[i % len(files)].stem}_{i:05d}.pkl", MotionFile(cut, src.terrain, None)


def random_checkpoint(path: Path) -> Path:
    """A PARC-layout checkpoint with random weights for the built-in humanoid, written to `path`."""
    import torch

    from physrec.motion.character import Character
    from physrec.observations import observation_size
    from physrec.trackers.parc_policy import random_state_dict
    ch = Character.load()
    torch.save(random_state_dict(observation_size("parc", ch), ch.num_dof), path)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--motions", type=int, default=4096, help="motions in the batch")
    p.add_argument("--files", type=Path, nargs="+", required=True, help="PARC motion files to cycle through")
    p.add_argument("--frames", type=int, help="cut every motion to at most this many frames")
    p.add_argument("--backend", default="mujoco", choices=["mujoco", "mujoco_warp"])
    p.add_argument("--device", default="cpu", help="mujoco_warp: cuda, cuda:N or cpu")
    p.add_argument("--tracker", default="pd", choices=["pd", "parc"])
    p.add_argument("--model", help="parc: the checkpoint (PARC's model_*.pt), or 'random' for one in "
                   "PARC's layout with random weights (the same cost, other successes)")
    p.add_argument("--no-later-starts", action="store_true", help="record from each motion's start only")
    p.add_argument("--no-terrain-mesh", action="store_true", help="record.terrain_mesh: false")
    p.add_argument("--dir", type=Path, default=Path("/tmp/physrec-bench-batch"))
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)


def run(a: argparse.Namespace) -> None:
    if a.tracker == "parc" and a.model is None:
        raise SystemExit("physrec bench batch: --tracker parc needs --model")
    start = time.perf_counter()
    a.dir.parent.mkdir(parents=True, exist_ok=True)  # the random checkpoint goes beside the project
    model = random_checkpoint(a.dir.parent / f"{a.dir.name}-random-parc.pt") if a.model == "random" else a.model
    tracker = {"kind": "pd"} if a.tracker == "pd" else {"kind": "parc", "model": str(Path(model).resolve())}
    record: dict = {"threads": a.cores}
    if a.no_later_starts:
        record["start_fractions"] = []
    if a.no_terrain_mesh:
        record["terrain_mesh"] = False
    cfg = {"results_dir": "results",
           "iterations": [{"name": "iter0", "dataset": "data/dataset.yaml", "tracker": tracker}],
           "backend": a.backend, "device": a.device,
           "batch_size": 10 * a.motions,  # one batch: no motion's name hash cuts the run
           "record": record, "report": {"videos": "none"}}
    root = scaffold(a.dir, cfg, copies(a.files, a.motions, a.frames))
    print(f"{a.motions} motions written in {time.perf_counter() - start:.1f} s ({root})", flush=True)
    wall, _ = snakemake(root, a.cores)
    logs = sorted((root / "logs" / "iter0" / "record").glob("*.log"))
    if len(logs) != 1:
        raise SystemExit(f"expected one record job, found {len(logs)} in {root / 'logs'}")
    print(logs[0].read_text(), end="")
    bench = next((root / "benchmarks" / "iter0" / "record").glob("*.tsv")).read_text().splitlines()
    row = dict(zip(bench[0].split("\t"), bench[1].split("\t")))
    print(f"record job: {float(row['s']):.1f} s wall, {float(row['max_rss']):.0f} MB peak memory; "
          f"the whole run {wall:.1f} s")
    sizes = {p.name: p.stat().st_size for p in (root / "results" / "iter0" / "record").glob("*/*")}
    print("record outputs: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(sizes.items())))
