"""A record job's recording phase alone, in its own process: prints its peak resident memory
above what the process held before it, beside the recording's bound from the plan
(recording.memory). Usage: python peak_rss_job.py OUT.h5 BUDGET_BYTES MOTIONS SECONDS.

The peak is Linux's VmHWM, reset (/proc/self/clear_refs) after a warm-up recording, so
imports and first-call allocations are not counted."""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import tempfile
from pathlib import Path

from physrec import demo
from physrec.formats.rollouts import rollouts_writer
from physrec.motion.character import Character
from physrec.recording import memory
from physrec.recording.batch import record_batch
from physrec.recording.data import BatchMotion
from physrec.recording.settings import RecordSettings
from physrec.sim.world import PhysicsSettings
from physrec.stages.record import episode
from physrec.trackers.pd import PDTracker


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def record(out: Path, batch: list[BatchMotion], ch: Character, settings: RecordSettings) -> None:
    with rollouts_writer(out) as add:
        record_batch(batch, ch, PDTracker(), settings, on_attempts=lambda found: add([episode(a) for a in found]))


def main(out: str, budget: int, count: int, seconds: float) -> None:
    memory.PASS_BUDGET_BYTES = budget
    ch = Character.load("builtin:humanoid")
    # one control step per physics step: four times PARC's frames per second of physics
    settings = RecordSettings(PhysicsSettings(control_hz=120), start_fractions=())
    # 10 frames a second: the reference (a float64 copy of every frame) stays small beside the recording
    standing = demo._motion(demo._still(0.0, 0.0, seconds), demo.flat_terrain())
    m = standing.motion
    slow = dataclasses.replace(m, root_pos=m.root_pos[::3], root_rot=m.root_rot[::3], joint_rot=m.joint_rot[::3],
                               body_contacts=m.body_contacts[::3], fps=m.fps // 3)
    batch = [BatchMotion(f"stand_{i}", slow, standing.terrain) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp) / "warm.h5", batch[:1], ch, settings)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kb("VmRSS")
    record(Path(out), batch, ch, settings)
    bound = memory.recording_bytes([slow.duration] * count, settings.physics.control_hz) + memory.reference_bytes(
        slow.num_frames * count, ch.num_joints)
    print(json.dumps({"extra_mb": (status_kb("VmHWM") - before) / 1024, "bound_mb": bound / 1e6}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
