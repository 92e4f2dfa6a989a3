"""Recording one batch: every motion tracked in simulation, with later-start retries.

The full-length pass runs first. With record.recovery: parc, motions that failed are retried
from later start fractions (PARC: 0.1 ... 0.5), one pass per fraction and only for motions
still failing, skipping starts that leave less than the minimum remaining length. With
segments, each pass restarts every attempt that failed in the pass before from the reference
where that attempt ended, while record.min_segment_s of its motion is left. Every attempt is
kept for the trajectory file; selection decides later what becomes recorded motions.

Each motion is simulated in its own coordinates over only the part of its terrain its
character can reach, one environment of the backend per motion. The batch's tiled world
(PARC's layout, see motion.terrain.tile_square) exists only in the outputs: attempts are
moved into it by the motion's offset when they are collected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import sys
import time
from typing import Any, Callable

import numpy as np

from physrec.motion.character import Character
from physrec.motion.terrain import tile_square
from physrec.observations import observation_size
from physrec.observations.observer import Observer
from physrec.progress import PassProgress, PhaseTimes
from physrec.recording.data import Attempt, BatchMotion, BatchRecording
from physrec.recording.host_pass import HostPass
from physrec.recording.passes import Pass
from physrec.recording.plan import batch_boxes, build_reference, pass_starts
from physrec.recording.planned_pass import plan_request, planned_pass
from physrec.recording.memory import frame_bytes, pass_groups
from physrec.recording.settings import RecordSettings, attempt_steps
from physrec.sim.backend import (BackendOutOfMemory, BackendSpec, LimitExceeded, backend_capacity, make_backend,
                                 tensor_device)
from physrec.trackers.base import Planner, Tracker, is_planner

MAX_LIMIT_SCALE = 16  # a batch whose buffers overflow at 16x the defaults fails its job


def _released(a: Attempt) -> Attempt:
    """An attempt whose arrays were handed on (written): its steps and outcome, no frames."""
    empty = np.empty(0)
    return dataclasses.replace(a, actions=np.empty((a.steps, 0), np.float32), qpos=empty, qvel=empty,
                               contacts=empty, errors=empty, ref_time=empty, obs=None)


class _Envs:
    """A backend opened on some of the batch's motions (environment i holds motion `index[i]`),
    with what every pass over them reads; a later pass reuses it for any of its motions."""

    def __init__(self, index: np.ndarray, motions: list[BatchMotion], offsets: np.ndarray, boxes: np.ndarray,
                 character: Character, tracker: Tracker | Planner, settings: RecordSettings, backend: BackendSpec,
                 progress: Callable[[str], None], label: str) -> None:
        self.index = index
        self.motions = [motions[i] for i in index]
        self.offsets, self.boxes = offsets[index], boxes[index]
        self.ref = build_reference(character, self.motions)
        self.observer = None
        if getattr(tracker, "observation", None):
            self.observer = Observer(tracker.observation, character, [m.motion for m in self.motions],
                                     [m.terrain for m in self.motions], 1.0 / settings.physics.control_hz,
                                     tensor_device(backend))
        self.no_autograd: Callable[[], contextlib.AbstractContextManager] = (
            contextlib.nullcontext if self.observer is None else self.observer.inference_mode)
        ready_from = time.perf_counter()
        self.sim = make_backend(backend, character, settings.physics, len(index), self.boxes.shape[1])
        try:
            # On a GPU, compiling MuJoCo Warp's kernels (cached after the first job) can outlast the physics.
            progress(f"{label} {backend.name} ready with {len(index)} environments in "
                     f"{time.perf_counter() - ready_from:.1f} s")
            self.pass_type: Callable[..., Pass] = functools.partial(HostPass, threads=backend.threads)
            if hasattr(self.sim, "step_tensors"):  # a backend on a device: the control loop stays there
                from physrec.recording.device_pass import DevicePass, DeviceTables
                self.pass_type = functools.partial(DevicePass,
                                                   tables=DeviceTables(character, self.motions, self.sim.tensor_device))
                self.no_autograd = DevicePass.inference_mode
            self.sim.set_terrain(np.arange(len(index)), self.boxes)
        except BaseException:
            self.sim.close()
            raise

    def holds(self, motions: np.ndarray) -> bool:
        return bool(np.isin(motions, self.index).all())

    def run(self, group: np.ndarray, fraction: float | np.ndarray, tracker: Tracker | Planner, settings: RecordSettings,
            backend: BackendSpec, seed: int, progress: Callable[[str], None], say: str, pass_label: str,
            done: PassProgress, times: PhaseTimes) -> list[Attempt]:
        """The attempts of the batch's motions `group` (plan order) from `fraction` (one, or one per
        motion of `group`), in that order; the control loop's time added to `times`."""
        local = np.searchsorted(self.index, group)
        with self.no_autograd():
            if is_planner(tracker):
                request = functools.partial(plan_request, self.ref, self.motions, self.boxes, self.ref.character,
                                            settings, backend, seed, progress, pass_label)
                found = planned_pass(tracker, self.sim, self.ref, settings, local, fraction,  # type: ignore[arg-type]
                                     self.offsets, request, done, lambda text: progress(f"{say}: {text}"),
                                     self.observer)
            else:
                run = self.pass_type(self.sim, self.ref, settings, local, fraction, self.offsets, self.observer)
                found = run.run(tracker, done)
                if hasattr(run, "times"):
                    times.add(run.times)
        found.sort(key=lambda a: a.motion)
        for a in found:
            a.motion = int(self.index[a.motion])
        return found


def _release_device_memory() -> None:
    """torch keeps the blocks it freed for itself; after running out of GPU memory they go back
    to the device, so that Warp can allocate the smaller chunk's worlds."""
    gc.collect()
    torch = sys.modules.get("torch")  # never imported here for it: a CPU job without torch has none
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def record_batch(motions: list[BatchMotion], character: Character, tracker: Tracker | Planner,
                 settings: RecordSettings, backend: BackendSpec = BackendSpec(),
                 progress: Callable[[str], None] = lambda s: None, batch: str = "", seed: int = 0,
                 on_attempts: Callable[[list[Attempt]], None] | None = None) -> BatchRecording:
    """Track every motion of a batch; return all attempts in one canonical order: by pass (start
    fraction), then plan order, then start time.

    Pass after pass, a pass's motions run in consecutive plan-order groups: chunks that fit a
    backend of limited memory (the GPU; a chunk that runs out of memory is taken again in
    halves), cut again into groups whose buffers fit the host's budget (recording.memory). The
    order does not depend on that cutting, so `traj_<i>` ids and file bytes never depend on
    what else held the device's memory.

    `on_attempts` takes each group's attempts in that order as the group ends, and the recording
    keeps them released (no frames): the job holds one group's frames at a time.
    """
    wall = time.perf_counter()
    tiled = tile_square([m.terrain for m in motions])
    boxes = batch_boxes(motions, settings.terrain_margin)
    n = len(motions)
    seconds = sum(m.motion.duration for m in motions)
    progress(f"[{batch}] work: {seconds:.1f} motion-seconds in the full-length pass ("
             f"{int(round(seconds * settings.physics.control_hz)) * settings.physics.substeps} physics steps in all), "
             f"{boxes.shape[1]} collision boxes per environment; later starts retry what fails")
    capacity = backend_capacity(backend, character, settings.physics, boxes.shape[1])
    size = max(1, min(n, capacity or n))  # motions a backend holds
    if size < n:
        progress(f"[{batch}] {n} motions in chunks of {size} (what fits {backend.name} on {backend.device})")
    lengths = np.array([m.motion.duration for m in motions])  # the reference's (ReferenceSet.length)
    obs_floats = 0
    if getattr(tracker, "observation", None) and settings.save_obs:
        obs_floats = observation_size(tracker.observation, character)
    dt = 1.0 / settings.physics.control_hz
    pending = np.ones(n, dtype=bool)
    restart = np.zeros(n)  # where each motion's last attempt ended (record.recovery: segments)
    attempts: list[Attempt] = []
    provenance: dict[str, Any] = {}
    # Environments open at once: all the batch's motions, or on a device of limited memory, chunks of
    # them; every pass opens the same chunks (on a GPU, a new world count compiles kernels again).
    homes = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
    envs: _Envs | None = None
    times = PhaseTimes()

    def close() -> None:
        nonlocal envs, provenance
        if envs is not None:
            provenance = envs.sim.provenance()
            envs.sim.close()
            envs = None

    try:
        for p in range(settings.passes):
            todo, fraction = pass_starts(settings, p, lengths, pending, restart)
            if len(todo) == 0:
                continue
            if np.ndim(fraction) == 0:
                say = (f"[{batch}] pass {p + 1}/{settings.passes} (start {fraction:.0%}, "
                       f"{n - int(pending.sum())}/{n} motions recorded before it)")
            else:
                say = f"[{batch}] pass {p + 1}/{settings.passes} ({len(todo)} failed attempts restarted where they ended)"
            start = np.zeros(n)
            start[todo] = fraction  # each motion's start fraction in this pass
            this_pass: list[Attempt] = []
            done = PassProgress(progress, say, len(todo))
            chunks = [(home, todo[np.isin(todo, home)]) for home in homes]
            while chunks:
                home, chunk = chunks.pop(0)
                if not len(chunk):
                    continue
                written = 0  # the chunk's motions recorded (and handed on) so far
                try:
                    if envs is None or not envs.holds(chunk):
                        close()
                        label = f"[{batch}]" if len(home) == n else f"[{batch}] motions {home[0] + 1}-{home[-1] + 1}/{n}"
                        envs = _Envs(home, motions, tiled.offsets, boxes, character, tracker, settings, backend,
                                     progress, label)
                    for group in pass_groups(chunk, attempt_steps(lengths[chunk], start[chunk] * lengths[chunk], dt),
                                             frame_bytes(obs_floats)):
                        part = fraction if np.ndim(fraction) == 0 else start[group]
                        found = envs.run(group, part, tracker, settings, backend, seed, progress, say,
                                         f"[{batch}] pass {p + 1}", done, times)
                        for a in found:
                            a.pass_index = p
                        written += len(group)
                        if on_attempts is not None:
                            with times("writing"):
                                on_attempts(found)
                            found = [_released(a) for a in found]
                        attempts += found
                        this_pass += found
                except BackendOutOfMemory as e:
                    if len(home) == 1:
                        raise
                    progress(f"[{batch}] motions {home[0] + 1}-{home[-1] + 1}/{n}: {e}; taking these motions "
                             "again in halves")
                    close()  # the failed chunk's tensors are unreachable now: give their memory back
                    _release_device_memory()
                    halves = np.array_split(home, 2)
                    at = next(i for i, h in enumerate(homes) if h is home)
                    homes[at:at + 1] = halves
                    rest = chunk[written:]
                    chunks[:0] = [(h, rest[np.isin(rest, h)]) for h in halves]
                except LimitExceeded as e:
                    if backend.limit_scale >= MAX_LIMIT_SCALE:
                        raise
                    backend = dataclasses.replace(backend, limit_scale=2 * backend.limit_scale)
                    progress(f"[{batch}] {e}; recording these motions again with {backend.limit_scale}x the limits")
                    close()
                    chunks.insert(0, (home, chunk[written:]))
            if settings.recovery == "segments":  # the next pass restarts this pass's failures only
                pending[:] = False
            for a in this_pass:
                restart[a.motion] = a.end_time
                if a.success or settings.recovery == "segments":
                    pending[a.motion] = not a.success
    finally:
        close()
    succeeded = len({a.motion for a in attempts if a.success})
    sim_steps = sum(a.steps for a in attempts) * settings.physics.substeps + sum(
        int((a.search or {}).get("physics_steps", 0)) for a in attempts)  # a planner's search simulates too
    progress(f"[{batch}] finished: {succeeded}/{n} motions succeeded in simulation in {len(attempts)} attempts "
             "(the select job says how many its thresholds keep)")
    return BatchRecording(motions, tiled, attempts, tracker.describe(), provenance,
                          time.perf_counter() - wall, sim_steps, int(boxes.shape[1]), times.seconds)
