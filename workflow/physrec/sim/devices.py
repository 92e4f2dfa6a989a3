"""Which GPU a record job uses.

Snakemake counts GPUs (`--resources gpu=N`) but does not say which one a job gets, and a
SLURM allocation shows a job only its own (CUDA_VISIBLE_DEVICES). With `device: cuda` a
job takes the first visible GPU that no other physrec job on this machine holds, through
an exclusive lock on a file named after the GPU's PCI bus id, kept until the job exits.
The claimed GPU is this job's slot among the machine's GPUs: `claim_for_job` takes it once
per process, and the record job writes its bus id into record_env.yaml (`gpu`; the log says
when it was claimed: an output holds no wall-clock time).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Callable

_HELD: dict[str, object] = {}  # the GPU this process holds: bus id, lock file (open until exit)


def lock_dir() -> Path:
    return Path(os.environ.get("PHYSREC_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "physrec-gpu-locks"))


# How long a job waits for a GPU that other physrec jobs hold before it gives up.
WAIT_ENV = "PHYSREC_GPU_WAIT_S"
DEFAULT_WAIT_S = 3600.0


class DeviceBusyError(RuntimeError):
    """Every GPU stayed held by other jobs for longer than the job may wait."""


def _open_lock(path: Path) -> IO[bytes]:
    """The lock file, created so that every user can open it: jobs of several users share a GPU's lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)  # the umask took write bits away from the others
    except OSError:
        pass
    return os.fdopen(fd, "r+b")


def _holder(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read(200).decode("utf-8", "replace").strip() or "a physrec job"


def claim(bus_ids: list[str], say: Callable[[str], None] = lambda s: None, poll_s: float = 5.0,
          folder: Path | None = None, wait_s: float | None = None) -> tuple[int, IO[bytes]]:
    """Index of the first free device among `bus_ids` and the open lock file that holds it.

    Waits (saying which jobs hold the devices) while every device is held: more GPU jobs than
    GPUs were started. Gives up after `wait_s` (PHYSREC_GPU_WAIT_S, default 3600 s).
    """
    if not bus_ids:
        raise ValueError("no device to claim")
    wait_s = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)) if wait_s is None else wait_s
    folder = folder or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if folder.stat().st_uid == os.getuid():
            folder.chmod(0o1777)  # like /tmp: every user may add a lock, none remove another's
    except OSError:
        pass
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        holders = []
        for i, bus in enumerate(bus_ids):
            handle = _open_lock(folder / f"{bus.replace(':', '_').replace('/', '_')}.lock")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holders.append(f"{bus}: {_holder(handle)}")
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} of user {_user()} on {socket.gethostname()}".encode())
            handle.flush()
            return i, handle
        if time.monotonic() >= deadline:
            raise DeviceBusyError(f"no GPU became free in {wait_s:g} s ({WAIT_ENV}); held by: {'; '.join(holders)}")
        if not waited:
            say(f"all {len(bus_ids)} GPU(s) are held by other physrec jobs ({'; '.join(holders)}); waiting up to "
                f"{wait_s:g} s for one (give Snakemake --resources gpu=N with N the number of GPUs)")
            waited = True
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def claim_for_job(bus_ids: list[str], say: Callable[[str], None] = logging.getLogger("physrec").info) -> int:
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
