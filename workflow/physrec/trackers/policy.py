"""Learned policies as trackers: observation [N, O] -> PD targets [N, D], one control step a call.

Shared by the PARC checkpoint tracker and the exported-program tracker: both turn a file
into a torch callable, this wraps it for the recorder. Loading errors name the file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from physrec.formats.hashing import sha256_file
from physrec.motion.character import Character
from physrec.observations import observation_size
from physrec.trackers.base import TrackerError, TrackingInput
from physrec.trackers.model_files import first_line


# Rows of one policy call on the CPU. A multi-threaded matrix kernel may sum in another order
# on another thread count, and a call's row count picks the kernel (one row takes another path
# than many); single-threaded calls on chunks of exactly this many rows (the last one padded)
# give every row the same bits whatever the job's threads and whichever attempts share its
# chunk, so chunked passes record what one pass would.
POLICY_CHUNK_ROWS = 32


class PolicyTracker:
    max_horizon = 1

    def __init__(self, kind: str, policy: Callable[[torch.Tensor], torch.Tensor], observation: str,
                 description: str) -> None:
        self.kind, self.policy, self.observation, self._description = kind, policy, observation, description
        self._pool: ThreadPoolExecutor | None = None

    def describe(self) -> str:
        return self._description

    def use_threads(self, threads: int) -> None:
        """Run a CPU policy's chunks on `threads` threads (torch's kernels run on one each)."""
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def act(self, inp: TrackingInput) -> np.ndarray:
        with torch.inference_mode():
            if inp.obs.device.type != "cpu":
                targets = self.policy(inp.obs)
            else:
                chunks = inp.obs.split(POLICY_CHUNK_ROWS)
                outs = self._pool.map(self._forward, chunks) if self._pool and len(chunks) > 1 else map(
                    self._forward, chunks)
                targets = torch.cat(list(outs))
        return targets.detach().to("cpu", torch.float64).numpy()[:, None, :]

    def _forward(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # a pool thread's own mode
            n = len(obs)
            if n < POLICY_CHUNK_ROWS:
                obs = torch.cat([obs, obs.new_zeros(POLICY_CHUNK_ROWS - n, obs.shape[1])])
            return self.policy(obs)[:n]


def limit_torch_threads(threads: int) -> None:
    """torch's own kernels run on one thread: results must not depend on the job's thread count
    (PolicyTracker spreads a policy's rows over the job's threads instead), and MuJoCo and torch
    take turns on the job's cores."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (it can be set only once)
        pass


def model_path(spec: dict) -> Path:
    model = spec.get("model")
    if not model:
        raise TrackerError(f"tracker kind '{spec.get('kind')}' needs 'model', the path of its model file")
    path = Path(str(model))
    if not path.exists():  # anything else that is not a regular file is refused when read
        raise TrackerError(f"{path}: model file not found")
    return path


def describe_model(kind: str, path: Path, detail: str) -> str:
    return f"{kind}: {path} (sha256 {sha256_file(path)[:16]}), {detail}"


def check_policy(policy: Callable[[torch.Tensor], torch.Tensor], what: str, character: Character, observation: str,
                 device: str) -> None:
    """Run the policy once on zeros: it must map [N, O] to finite [N, D]."""
    obs = torch.zeros(2, observation_size(observation, character), device=device)
    try:
        with torch.inference_mode():
            out = policy(obs)
    except Exception as e:  # a user's program can raise anything; say which file and what
        raise TrackerError(f"{what}: fails on a [2, {obs.shape[1]}] observation: {first_line(e)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, character.num_dof):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TrackerError(f"{what}: maps a [2, {obs.shape[1]}] observation to {shape}, expected "
                           f"(2, {character.num_dof}) PD targets")
    if not torch.isfinite(out).all():
        raise TrackerError(f"{what}: returns non-finite PD targets for an all-zero observation")
