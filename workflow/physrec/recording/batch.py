"""Recording one batch: every motion tracked in simulation, with later-start retries.

The full-length pass runs first. With record.recovery: parc, motions that failed are retried
from later start fractions (PARC: 0.1 ... 0.5), one pass per fraction and only for motions
still failing, skipping starts that leave less than the minimum remaining length. With
segments, each pass restarts every attempt that failed in the pass before from the reference
where that attempt ended, while record.min_segment_s of its motion is left. Every attempt is
kept for the trajectory file; selection decides later what becomes recorded motions.

Each motion is simulated in its own coordinates over only the part of its terrain its
character can reach, in environment i of the backend for motion i. The batch's tiled world
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
from physrec.observations.observer import Observer
from physrec.progress import PassProgress
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


def _record_envs(motions: list[BatchMotion], offsets: np.ndarray, boxes: np.ndarray, character: Character,
                 tracker: Tracker | Planner, settings: RecordSettings, backend: BackendSpec,
                 progress: Callable[[str], None], label: str, seed: int,
                 on_pass: Callable[[list[Attempt]], None] | None = None) -> tuple[list[Attempt], dict[str, Any]]:
    """Every pass over `motions`, one environment each, on one backend: (attempts, provenance).
    `on_pass` takes each pass's attempts in plan order as it ends; they are kept released."""
    ref = build_reference(character, motions)
    observer = None
    if getattr(tracker, "observation", None):
        observer = Observer(tracker.observation, character, [m.motion for m in motions], [m.terrain for m in motions],
                            1.0 / settings.physics.control_hz, tensor_device(backend))
    n = len(motions)
    pending = np.ones(n, dtype=bool)
    restart = np.zeros(n)  # where each motion's last attempt ended (record.recovery: segments)
    attempts: list[Attempt] = []
    no_autograd = contextlib.nullcontext() if observer is None else observer.inference_mode()
    ready_from = time.perf_counter()
    sim = make_backend(backend, character, settings.physics, n, boxes.shape[1])
    # On a GPU, compiling MuJoCo Warp's kernels (cached after the first job) can outlast the physics.
    progress(f"{label} {backend.name} ready with {n} environments in {time.perf_counter() - ready_from:.1f} s")
    pass_type: Callable[..., Pass] = HostPass
    if hasattr(sim, "step_tensors"):  # a backend on a device: the control loop stays there
        from physrec.recording.device_pass import DevicePass, DeviceTables
        pass_type = functools.partial(DevicePass, tables=DeviceTables(character, motions, sim.tensor_device))
        no_autograd = DevicePass.inference_mode()
    with contextlib.closing(sim), no_autograd:
        sim.set_terrain(np.arange(n), boxes)
        obs_floats = int(observer.size) if observer is not None and settings.save_obs else 0
        for p in range(settings.passes):
            todo, fraction = pass_starts(settings, p, ref.length, pending, restart)
            if len(todo) == 0:
                continue
            if np.ndim(fraction) == 0:
                say = (f"{label} pass {p + 1}/{settings.passes} (start {fraction:.0%}, "
                       f"{n - int(pending.sum())}/{n} motions recorded before it)")
            else:
                say = f"{label} pass {p + 1}/{settings.passes} ({len(todo)} failed attempts restarted where they ended)"
            done = PassProgress(progress, say, len(todo))
            dt = 1.0 / settings.physics.control_hz
            found = []
            first = 0
            for group in pass_groups(todo, attempt_steps(ref.length[todo], fraction * ref.length[todo], dt),
                                     frame_bytes(obs_floats)):
                part = fraction if np.ndim(fraction) == 0 else fraction[first:first + len(group)]
                first += len(group)
                if is_planner(tracker):
                    found += planned_pass(tracker, sim, ref, settings, group, part, offsets,  # type: ignore[arg-type]
                                          functools.partial(plan_request, ref, motions, boxes, character, settings,
                                                            backend, seed, progress, f"{label} pass {p + 1}"),
                                          done, lambda text, say=say: progress(f"{say}: {text}"))
                else:
                    found += pass_type(sim, ref, settings, group, part, offsets, observer).run(tracker, done)
            found.sort(key=lambda a: a.motion)
            for a in found:
                a.pass_index = p
            if on_pass is not None:
                on_pass(found)
                found = [_released(a) for a in found]
            if settings.recovery == "segments":  # the next pass restarts this pass's failures only
                pending[:] = False
            for a in found:
                attempts.append(a)
                restart[a.motion] = a.end_time
                if a.success or settings.recovery == "segments":
                    pending[a.motion] = not a.success
        return attempts, sim.provenance()


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

    A backend with limited memory (the GPU) takes the batch in chunks that fit it, each chunk
    with every pass; a chunk that still runs out of memory is taken again in halves. The order
    does not depend on that chunking, so `traj_<i>` ids and file bytes never depend on what else
    held the device's memory.

    `on_attempts` takes the attempts in that order, and the recording keeps them released (no
    frames): on a backend without a device limit (the CPU) pass by pass as each ends, so that
    the job holds one pass's frames at a time; elsewhere all at the end, since a chunk may be
    taken again.
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
    size = min(n, capacity or n)
    stream = on_attempts if capacity is None else None
    if size < n:
        progress(f"[{batch}] {n} motions in chunks of {size} (what fits {backend.name} on {backend.device})")
    todo = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
    attempts: list[Attempt] = []
    provenance: dict[str, Any] = {}
    out_of_memory = False
    while todo:
        if out_of_memory:  # the failed chunk's tensors are unreachable now: give their memory back
            _release_device_memory()
            out_of_memory = False
        chunk = todo.pop(0)
        label = f"[{batch}]" if len(chunk) == n else f"[{batch}] motions {chunk[0] + 1}-{chunk[-1] + 1}/{n}"
        try:
            found, provenance = _record_envs([motions[i] for i in chunk], tiled.offsets[chunk], boxes[chunk],
                                             character, tracker, settings, backend, progress, label, seed, stream)
        except BackendOutOfMemory as e:
            if len(chunk) == 1:
                raise
            progress(f"{label} {e}; taking these motions again in halves")
            todo[:0] = np.array_split(chunk, 2)
            out_of_memory = True
            continue
        except LimitExceeded as e:
            if backend.limit_scale >= MAX_LIMIT_SCALE:
                raise
            backend = dataclasses.replace(backend, limit_scale=2 * backend.limit_scale)
            progress(f"{label} {e}; recording these motions again with {backend.limit_scale}x the limits")
            todo.insert(0, chunk)
            continue
        for a in found:
            a.motion = int(chunk[a.motion])
        attempts += found
    attempts.sort(key=lambda a: (a.pass_index, a.motion, a.start_time))
    if on_attempts is not None and stream is None:
        on_attempts(attempts)
        attempts = [_released(a) for a in attempts]
    succeeded = len({a.motion for a in attempts if a.success})
    sim_steps = sum(a.steps for a in attempts) * settings.physics.substeps + sum(
        int((a.search or {}).get("physics_steps", 0)) for a in attempts)  # a planner's search simulates too
    progress(f"[{batch}] finished: {succeeded}/{n} motions succeeded in simulation in {len(attempts)} attempts "
             "(the select job says how many its thresholds keep)")
    return BatchRecording(motions, tiled, attempts, tracker.describe(), provenance,
                          time.perf_counter() - wall, sim_steps, int(boxes.shape[1]))
