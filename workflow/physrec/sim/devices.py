"""Which GPU a record job uses.

Snakemake counts GPUs (`--resources gpu=N`) but does not say which one a job gets, and a
SLURM allocation shows a job only its own (CUDA_VISIBLE_DEVICES). With `device: cuda` a
job takes the first visible GPU that no other physrec job on this machine holds, through
an exclusive lock on a file named after the GPU's PCI bus id, kept until the job exits.
The claimed GPU is this job's slot among the machine's GPUs: `claim_for_job` takes it once
per process, and the record job writes its bus id into record_env.yaml (`gpu`; the log says
when it was claimed: an output holds no wall-clock time).

Test hook: PHYSREC_STANDIN_GPUS="id0,id1" makes every record job declare `gpu=1` and claim
one of these ids with the same locks, whatever its backend, so the tests can run
`--resources gpu=N` with the CPU backend standing in for GPU jobs and check which device
each job was given. Unset (always, outside the tests) it changes nothing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Callable

STANDIN_ENV = "PHYSREC_STANDIN_GPUS"
_HELD: dict[str, object] = {}  # the GPU this process holds: bus id, lock file (open until exit)


def lock_dir() -> Path:
    return Path(os.environ.get("PHYSREC_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "physrec-gpu-locks"))


def claim(bus_ids: list[str], say: Callable[[str], None] = lambda s: None, poll_s: float = 5.0,
          folder: Path | None = None) -> tuple[int, IO[bytes]]:
    """Index of the first free device among `bus_ids` and the open lock file that holds it.

    Waits (saying so) while every device is held: more GPU jobs than GPUs were started.
    """
    if not bus_ids:
        raise ValueError("no device to claim")
    folder = folder or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for i, bus in enumerate(bus_ids):
            handle = open(folder / f"{bus.replace(':', '_').replace('/', '_')}.lock", "ab")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return i, handle
        if not waited:
            say(f"all {len(bus_ids)} GPU(s) are held by other physrec jobs; waiting for one "
                "(give Snakemake --resources gpu=N with N the number of GPUs)")
            waited = True
        time.sleep(poll_s)


def claim_for_job(bus_ids: list[str], say: Callable[[str], None] = print) -> int:
    """Index among `bus_ids` of this process's GPU, claimed on the first call and held until
    the process exits (every later call returns the same one)."""
    if "bus_id" not in _HELD:
        index, lock = claim(bus_ids, say=say)
        _HELD.update(bus_id=bus_ids[index], lock=lock)
        say(f"GPU {bus_ids[index]} claimed (device {index} of {len(bus_ids)}) at Unix time {time.time():.3f}")
    return list(bus_ids).index(str(_HELD["bus_id"]))


def held_gpu_provenance() -> dict[str, object]:
    """For record_env.yaml: the bus id of the GPU this job claimed (empty when it claimed none)."""
    return {"gpu": str(_HELD["bus_id"])} if "bus_id" in _HELD else {}


def standin_gpus() -> list[str]:
    """The stand-in device ids of the test hook (PHYSREC_STANDIN_GPUS); [] when unset."""
    return [s.strip() for s in os.environ.get(STANDIN_ENV, "").split(",") if s.strip()]


def claim_standin(say: Callable[[str], None] = print) -> None:
    """Test hook: claim one of the stand-in devices as a GPU job would; nothing when unset."""
    ids = standin_gpus()
    if ids:
        claim_for_job(ids, say=say)
