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
# A chunk of fewer rows (a pass's last, or a pass of few environments: later starts, the tail of
# long motions) is padded to a multiple of this instead, where the policy gives every row the
# same bits in calls of 8 to 32 rows (checked once per tracker on fixed inputs; common CPU GEMM
# kernels take one path from 4 rows up). Measured 2026-12-07 on this 2-core VM, PARC's actor:
# 6.2 ms a call of 8 rows against 11.4 ms for 32. Such a policy's rows on several threads go in
# calls of as few multiples of this as give each thread one (PolicyTracker._chunk_rows).
POLICY_PAD_ROWS = 8


class PolicyTracker:
    max_horizon = 1

    def __init__(self, kind: str, policy: Callable[[torch.Tensor], torch.Tensor], observation: str,
                 description: str) -> None:
        self.kind, self.policy, self.observation, self._description = kind, policy, observation, description
        self._pool: ThreadPoolExecutor | None = None
        self._threads = 1
        self._pad_rows: int | None = None  # rows a short chunk is padded to a multiple of (_short_chunks)

    def describe(self) -> str:
        return self._description

    def use_threads(self, threads: int) -> None:
        """Run a CPU policy's chunks on `threads` threads (torch's kernels run on one each)."""
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._threads = max(1, threads)

    def act(self, inp: TrackingInput) -> np.ndarray:
        with torch.inference_mode():
            if inp.obs.device.type != "cpu":
                targets = self.policy(inp.obs)
            else:
                if self._pad_rows is None:
                    self._pad_rows = self._short_chunks(inp.obs.shape[1])
                chunks = inp.obs.split(self._chunk_rows(len(inp.obs)))
                outs = self._pool.map(self._forward, chunks) if self._pool and len(chunks) > 1 else map(
                    self._forward, chunks)
                targets = torch.cat(list(outs))
        return targets.detach().to("cpu", torch.float64).numpy()[:, None, :]

    def _chunk_rows(self, n: int) -> int:
        """Rows per call for n rows: POLICY_CHUNK_ROWS; or, where short calls give a row the bits
        of a full one (`_pad_rows`), as few multiples of them as give every thread a call (on 2
        threads, 9 to 64 rows go in two calls, where one call of up to 32 rows left a thread idle)."""
        if not self._pad_rows or self._threads == 1:
            return POLICY_CHUNK_ROWS
        per_thread = -(-n // self._threads)
        return min(POLICY_CHUNK_ROWS, max(self._pad_rows, -(-per_thread // self._pad_rows) * self._pad_rows))

    def _forward(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # a pool thread's own mode
            n = len(obs)
            pad = self._pad_rows or POLICY_CHUNK_ROWS
            rows = min(POLICY_CHUNK_ROWS, -(-n // pad) * pad)
            if n < rows:
                obs = torch.cat([obs, obs.new_zeros(rows - n, obs.shape[1])])
            return self.policy(obs)[:n]

    def _short_chunks(self, size: int) -> int:
        """POLICY_PAD_ROWS where calls of every multiple of it up to POLICY_CHUNK_ROWS rows give the
        rows of a full chunk bit for bit (fixed inputs, on this machine and build), else 0: short
        chunks padded to full ones, as rows then depend on the call's row count."""
        x = torch.randn(POLICY_CHUNK_ROWS, size, generator=torch.Generator().manual_seed(0)) * 3
        with torch.inference_mode():
            full = self.policy(x)
            for m in range(POLICY_PAD_ROWS, POLICY_CHUNK_ROWS, POLICY_PAD_ROWS):
                if not torch.equal(torch.cat([self.policy(x[i:i + m]) for i in range(0, POLICY_CHUNK_ROWS, m)]), full):
                    return 0
        return POLICY_PAD_ROWS


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
