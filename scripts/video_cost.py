"""Cost of a video second (docs/videos.md): a standing motion on PARC's TEASER_TERRAIN terrain
(or the demo's flat one without PARC's samples) recorded under `pd`, then its whole attempt
rendered at 640x360 by MuJoCo's renderer (EGL) and by physrec's software renderer, each in its
own process (MuJoCo picks its OpenGL when imported).

    python scripts/video_cost.py [SECONDS]      # default 20 s of motion
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "parc_samples" / "TEASER_TERRAIN.pkl"


def record(root: Path, seconds: float) -> Path:
    from physrec import config
    from physrec.demo import _motion, _still, flat_terrain
    from physrec.formats.dataset_yaml import write_dataset
    from physrec.formats.motion_file import read_motion_file, write_motion_file
    from physrec.stages.batch_plan import batch_ids, make_plan, write_plan
    from physrec.stages.index import index_dataset, read_manifest, write_manifest
    from physrec.stages.record import run_record
    if SAMPLE.is_file():
        parc = read_motion_file(SAMPLE)
        terrain, (x, y) = parc.terrain, parc.motion.root_pos[0, :2]
    else:
        terrain, x, y = flat_terrain(), 0.0, 0.0
    write_motion_file(root / "stand.pkl", _motion(_still(float(x), float(y), seconds), terrain))
    write_dataset(root / "dataset.yaml", [("stand.pkl", 1.0)])
    write_manifest(root / "manifest.tsv", index_dataset(root / "dataset.yaml"))
    write_plan(root / "plan.tsv", make_plan(read_manifest(root / "manifest.tsv"), 16))
    cfg = config.validate({"iterations": [{"name": "it0", "dataset": "dataset.yaml"}]})
    run_record(root / "plan.tsv", batch_ids(root / "plan.tsv")[0], cfg["record"], {"kind": "pd"}, {"name": "mujoco"},
               "builtin:humanoid", 0, 1, root / "record", ["physrec", "record"], progress=lambda s: None)
    return root / "record"


def render(record_dir: str, kind: str) -> None:
    """In this process: one video of traj_0, its wall time and video seconds printed as JSON."""
    os.environ["MUJOCO_GL"] = "egl" if kind == "opengl" else "disable"
    from physrec.render.video import render_attempt
    from physrec.stages.record_folder import RecordFolder
    ep = RecordFolder(record_dir).episodes["traj_0"]
    t = time.perf_counter()
    render_attempt(record_dir, "traj_0", Path(record_dir).parent / f"{kind}.mp4", 640, 360, kind)
    wall = time.perf_counter() - t
    video_s = ep["end_time"] - ep["start_time"]
    print(json.dumps({"renderer": kind, "video_s": round(video_s, 2), "wall_s": round(wall, 1),
                      "wall_s_per_video_s": round(wall / video_s, 3), "success": ep["success"]}))


if __name__ == "__main__":
    if len(sys.argv) == 3:
        render(sys.argv[1], sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rec = record(Path(tmp), float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
            print("terrain:", "TEASER_TERRAIN" if SAMPLE.is_file() else "demo flat", flush=True)
            for kind in ("opengl", "software"):
                subprocess.run([sys.executable, __file__, str(rec), kind], check=True)
