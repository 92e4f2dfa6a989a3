"""Which GPU a record job uses.

Snakemake counts GPUs (`--resources gpu=N`) but does not say which one a job gets, and a
SLURM allocation shows a job only its own (CUDA_VISIBLE_DEVICES). With `device: cuda` a
job takes the first visible GPU that no other physrec job on this machine holds, through
an exclusive lock on a file named after the GPU's PCI bus id, kept until the job exits.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Callable


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
