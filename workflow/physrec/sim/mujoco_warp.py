"""GPU backend: MuJoCo Warp, every environment one world of one batched model (it also
runs on Warp's CPU device, for development and tests).

The world (sim.world) is compiled once; `put_model` gives the terrain geoms' positions,
sizes and bounding volumes a per-world copy, so each environment has its own terrain
while all share one kernel launch per physics step. Geoms of the world body are static in
MuJoCo Warp: their world positions (Data.geom_xpos) are computed once in `make_data` and
never by kinematics, so `set_terrain` writes them too.

Warp steps every world at once. Environments outside a `step` call are restored after
each control step from a snapshot taken at the start of the call, which keeps their state
bit-for-bit and keeps them from drifting into contact-heavy states that would crowd the
contact pool all worlds share.

The semantics are MujocoBackend's: PD targets held as `ctrl` over the substeps, contact
flags from the per-body contact sensors of the last substep, and a zero solver warm
start at reset and at the start of every `step` call (the CPU rollout passes
`initial_warmstart=0`). Warp computes in float32; qpos/qvel come back as float64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import mujoco
import numpy as np

from physrec.motion.character import Character
from physrec.sim.backend import BackendError, BackendOutOfMemory, BackendSpec, LimitExceeded, Steps
from physrec.sim.devices import claim_for_job
from physrec.sim.world import PhysicsSettings, box_geom_fields, compile_world

# Contacts per world on average (the contact pool holds nconmax * num_envs, shared by all
# worlds) and constraint rows per world (a hard per-world limit). Measured with the built-in
# humanoid: standing on boxes 8 contacts / 36 rows; 64 worlds tumbling over steps under
# random targets for 5 s at most 37 contacts and 46 rows in one world, and under 13 contacts
# per world on average of each world's peak. The defaults leave ~5x, at ~100 kB per world.
NCONMAX = 64
NJMAX = 256
# Share of the device's free memory the persistent arrays may take (see capacity).
_MEMORY_FRACTION = 0.5

_TERRAIN_FIELDS = ("geom_pos", "geom_size", "geom_aabb", "geom_rbound")

try:
    import mujoco_warp as mjw
    import warp as wp
except ImportError as _e:  # the CPU backend must keep working without the GPU packages
    wp = mjw = None
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None
    # No line per kernel module loaded, nor the start-up banner: a record job's log is for its batch.
    wp.config.log_level = wp.LOG_WARNING
    wp.config.quiet = True


def _overflow_meaning() -> dict[int, tuple[str, str]]:
    """OverflowType bit -> (constructor argument or '', what overflowed). The solver's
    iteration limits (ITERATIONS, LS_ITERATIONS) are left out: CPU MuJoCo stops there too."""
    o = mjw.OverflowType
    return {int(o.NEFC): ("njmax", "constraint rows (nefc) over njmax"),
            int(o.NJMAX_NNZ): ("njmax", "constraint Jacobian non-zeros over njmax_nnz, which grows with njmax"),
            int(o.BROADPHASE): ("nconmax", "broadphase pairs over the contact pool (nconmax * num_envs)"),
            int(o.NARROWPHASE): ("nconmax", "contacts over the contact pool (nconmax * num_envs)"),
            int(o.CCD): ("nconmax", "convex-collision contacts over the pool (nconmax * num_envs)"),
            int(o.CONTACT_MATCH): ("", "contacts of one body over Option.contact_sensor_maxmatch"),
            int(o.HFIELD): ("", "height-field contacts over MuJoCo Warp's fixed limit"),
            int(o.NVMAX): ("", "awake DOFs over nvmax"),
            int(o.EPA_HORIZON): ("", "EPA horizon over MuJoCo Warp's fixed MJ_MAX_EPAHORIZON"),
            int(o.TACTILE): ("", "tactile sensor pairs over MuJoCo Warp's limit")}


@functools.cache
def _kernels() -> SimpleNamespace:
    """The backend's own kernels, defined once Warp is known to be importable."""

    @wp.kernel
    def put_terrain(env: wp.array(dtype=wp.int32), pos: wp.array2d(dtype=wp.vec3), size: wp.array2d(dtype=wp.vec3),
                    aabb: wp.array3d(dtype=wp.vec3), rbound: wp.array2d(dtype=wp.float32),
                    geom_pos: wp.array2d(dtype=wp.vec3), geom_size: wp.array2d(dtype=wp.vec3),
                    geom_aabb: wp.array3d(dtype=wp.vec3), geom_rbound: wp.array2d(dtype=wp.float32),
                    geom_xpos: wp.array2d(dtype=wp.vec3)):
        i, g = wp.tid()
        w = env[i]
        geom_pos[w, g] = pos[i, g]
        geom_size[w, g] = size[i, g]
        geom_aabb[w, g, 0] = aabb[i, g, 0]
        geom_aabb[w, g, 1] = aabb[i, g, 1]
        geom_rbound[w, g] = rbound[i, g]
        geom_xpos[w, g] = pos[i, g]  # the world body's frame is the world frame

    @wp.kernel
    def put_state(env: wp.array(dtype=wp.int32), qpos: wp.array2d(dtype=wp.float32),
                  qvel: wp.array2d(dtype=wp.float32), qpos_out: wp.array2d(dtype=wp.float32),
                  qvel_out: wp.array2d(dtype=wp.float32)):
        i, j = wp.tid()
        w = env[i]
        if j < qpos.shape[1]:
            qpos_out[w, j] = qpos[i, j]
        if j < qvel.shape[1]:
            qvel_out[w, j] = qvel[i, j]

    @wp.kernel
    def gather_found(env: wp.array(dtype=wp.int32), adr: wp.array(dtype=wp.int32),
                     sensordata: wp.array2d(dtype=wp.float32), out: wp.array2d(dtype=wp.float32)):
        i, b = wp.tid()
        out[i, b] = sensordata[env[i], adr[b]]

    @wp.kernel
    def begin_call(slot: wp.array(dtype=wp.int32), qpos: wp.array2d(dtype=wp.float32),
                   qvel: wp.array2d(dtype=wp.float32), act: wp.array2d(dtype=wp.float32),
                   warm: wp.array2d(dtype=wp.float32), time: wp.array(dtype=wp.float32),
                   s_qpos: wp.array2d(dtype=wp.float32), s_qvel: wp.array2d(dtype=wp.float32),
                   s_act: wp.array2d(dtype=wp.float32), s_warm: wp.array2d(dtype=wp.float32),
                   s_time: wp.array(dtype=wp.float32)):
        w = wp.tid()
        for j in range(qpos.shape[1]):
            s_qpos[w, j] = qpos[w, j]
        for j in range(qvel.shape[1]):
            s_qvel[w, j] = qvel[w, j]
            s_warm[w, j] = warm[w, j]
            if slot[w] >= 0:
                warm[w, j] = 0.0
        for j in range(act.shape[1]):
            s_act[w, j] = act[w, j]
        s_time[w] = time[w]

    @wp.kernel
    def set_ctrl(slot: wp.array(dtype=wp.int32), targets: wp.array3d(dtype=wp.float32), k: int,
                 ctrl: wp.array2d(dtype=wp.float32)):
        w, j = wp.tid()
        s = slot[w]
        if s >= 0:
            ctrl[w, j] = targets[s, k, j]

    @wp.kernel
    def end_control_step(slot: wp.array(dtype=wp.int32), k: int, adr: wp.array(dtype=wp.int32),
                         sensordata: wp.array2d(dtype=wp.float32), qpos: wp.array2d(dtype=wp.float32),
                         qvel: wp.array2d(dtype=wp.float32), act: wp.array2d(dtype=wp.float32),
                         warm: wp.array2d(dtype=wp.float32), time: wp.array(dtype=wp.float32),
                         s_qpos: wp.array2d(dtype=wp.float32), s_qvel: wp.array2d(dtype=wp.float32),
                         s_act: wp.array2d(dtype=wp.float32), s_warm: wp.array2d(dtype=wp.float32),
                         s_time: wp.array(dtype=wp.float32), out: wp.array3d(dtype=wp.float32)):
        w = wp.tid()
        s = slot[w]
        nq, nv = qpos.shape[1], qvel.shape[1]
        if s >= 0:
            for j in range(nq):
                out[s, k, j] = qpos[w, j]
            for j in range(nv):
                out[s, k, nq + j] = qvel[w, j]
            for b in range(adr.shape[0]):
                out[s, k, nq + nv + b] = sensordata[w, adr[b]]
        else:
            for j in range(nq):
                qpos[w, j] = s_qpos[w, j]
            for j in range(nv):
                qvel[w, j] = s_qvel[w, j]
                warm[w, j] = s_warm[w, j]
            for j in range(act.shape[1]):
                act[w, j] = s_act[w, j]
            time[w] = s_time[w]

    return SimpleNamespace(put_terrain=put_terrain, put_state=put_state, gather_found=gather_found,
                           begin_call=begin_call, set_ctrl=set_ctrl, end_control_step=end_control_step)


class WarpBackend:
    """Environments as the worlds of one MuJoCo Warp model on one Warp device."""

    name = "mujoco_warp"

    def __init__(self, spec: BackendSpec, character: Character, settings: PhysicsSettings, num_envs: int,
                 terrain_slots: int, *, nconmax: int | None = None, njmax: int | None = None,
                 graph: bool | None = None) -> None:
        """`nconmax`/`njmax`: MuJoCo Warp's preallocated contacts (per world, pooled) and
        constraint rows (per world); default NCONMAX and NJMAX times spec.limit_scale. `graph`:
        replay each control step as a captured graph (None: wherever Warp can capture)."""
        self._device = _device(spec)
        self.tensor_device = self._device.alias if self._device.is_cuda else "cpu"  # where torch shares its arrays
        self.character, self.settings = character, settings
        self.num_envs, self.terrain_slots = int(num_envs), max(1, int(terrain_slots))
        self.nconmax = int(nconmax or NCONMAX * spec.limit_scale)
        self.njmax = int(njmax or NJMAX * spec.limit_scale)
        self.deterministic = bool(spec.deterministic)
        mjm = compile_world(character, self.terrain_slots, settings)
        self._nq, self._nv, self._nu = mjm.nq, mjm.nv, mjm.nu
        self._nbody = character.num_bodies
        with wp.ScopedDevice(self._device), _out_of_memory(self._device, self.num_envs):
            self.model, self.data = _put(mjm, self.num_envs, self.nconmax, self.njmax, self.deterministic)
            d = self.data
            self._contact_adr = wp.array(mjm.sensor_adr[-self._nbody:].astype(np.int32), dtype=wp.int32)
            self._snapshot = _snapshot(d)
            # One uncaptured step compiles every kernel (~35 s on 2 CPU cores, cold cache), then the
            # worlds start clean.
            self._advance()
            mjw.reset_data(self.model, d)
            wp.synchronize_device(self._device)
            self._graph = self._capture(required=bool(graph)) if graph is not False else None

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        if self.data is None:
            return
        wp.synchronize_device(self._device)
        self._graph = self.model = self.data = self._snapshot = self._contact_adr = None

    def __enter__(self) -> "WarpBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SimBackend ----------------------------------------------------------------------
    def set_terrain(self, env: np.ndarray, boxes: np.ndarray) -> None:
        env = self._env(env)
        _check_shape("boxes", boxes, (len(env), self.terrain_slots, 6))
        f = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in box_geom_fields(boxes).items()}
        m, d = self.model, self.data
        with wp.ScopedDevice(self._device):
            wp.launch(_kernels().put_terrain, dim=(len(env), self.terrain_slots), inputs=[
                wp.array(env, dtype=wp.int32), wp.array(f["geom_pos"], dtype=wp.vec3),
                wp.array(f["geom_size"], dtype=wp.vec3),
                wp.array(f["geom_aabb"].reshape(len(env), self.terrain_slots, 2, 3), dtype=wp.vec3),
                wp.array(f["geom_rbound"], dtype=wp.float32),
                m.geom_pos, m.geom_size, m.geom_aabb, m.geom_rbound, d.geom_xpos])

    def reset(self, env: np.ndarray, qpos: np.ndarray, qvel: np.ndarray, contacts: bool = True) -> np.ndarray | None:
        env = self._env(env)
        _check_shape("qpos", qpos, (len(env), self._nq))
        _check_shape("qvel", qvel, (len(env), self._nv))
        if len(env) == 0:
            return np.zeros((0, self._nbody), dtype=bool) if contacts else None
        k, m, d = _kernels(), self.model, self.data
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[env] = True
        with wp.ScopedDevice(self._device), _out_of_memory(self._device, self.num_envs):
            env_wp = wp.array(env, dtype=wp.int32)
            mjw.reset_data(m, d, reset=wp.array(mask, dtype=wp.bool))
            wp.launch(k.put_state, dim=(len(env), max(self._nq, self._nv)), inputs=[
                env_wp, wp.array(np.ascontiguousarray(qpos, dtype=np.float32)),
                wp.array(np.ascontiguousarray(qvel, dtype=np.float32)), d.qpos, d.qvel])
            d.overflow.zero_()
            if contacts:
                # Forward runs on every world; it recomputes derived quantities only, so the
                # others' state is untouched. A step needs none of them (it computes its own
                # from qpos and qvel), so a reset for stepping alone skips it.
                mjw.forward(m, d)
                found = wp.empty((len(env), self._nbody), dtype=wp.float32)
                wp.launch(k.gather_found, dim=found.shape, inputs=[env_wp, self._contact_adr, d.sensordata, found])
                flags = found.numpy() > 0
        self.check_overflow()
        return flags if contacts else None

    def step(self, env: np.ndarray, targets: np.ndarray) -> Steps:
        env = self._env(env)
        _check_shape("targets", targets, (len(env), None, self._nu))
        n, h = targets.shape[0], targets.shape[1]
        nq, nv, nb = self._nq, self._nv, self._nbody
        if n == 0:
            return Steps(np.zeros((0, h, nq)), np.zeros((0, h, nv)), np.zeros((0, h, nb), dtype=bool))
        slot = np.full(self.num_envs, -1, dtype=np.int32)
        slot[env] = np.arange(n, dtype=np.int32)
        with wp.ScopedDevice(self._device), _out_of_memory(self._device, self.num_envs):
            out = wp.empty((n, h, nq + nv + nb), dtype=wp.float32)
            self.data.overflow.zero_()
            self._launch_steps(wp.array(slot, dtype=wp.int32),
                               wp.array(np.ascontiguousarray(targets, dtype=np.float32), dtype=wp.float32), out)
            host = out.numpy()
        self.check_overflow()
        return Steps(host[..., :nq].astype(np.float64), host[..., nq:nq + nv].astype(np.float64),
                     host[..., nq + nv:] > 0)

    def step_tensors(self, slot: Any, targets: Any) -> Any:
        """`step` for a control loop on the device: torch tensors in and out, shared with Warp
        without copies, no host transfer and no overflow check (call `check_overflow` every
        so often). slot [num_envs] int32: the row of each world in `targets` [n, H, nu]
        float32, or -1 for a world that keeps its state. Returns [n, H, nq + nv + B] float32:
        qpos, qvel and contact flags (> 0) after each control step; zeros in the rows no world
        points to."""
        import torch
        n, h = targets.shape[0], targets.shape[1]
        out = torch.zeros((n, h, self._nq + self._nv + self._nbody), dtype=torch.float32, device=targets.device)
        # On CUDA, Warp runs on torch's stream, so both see each other's work in order; and
        # Warp's own stream waits for it on the way out (reset, check_overflow run there),
        # whichever stream torch is on.
        stream = (wp.ScopedStream(wp.stream_from_torch(self.tensor_device), sync_exit=True) if self._device.is_cuda
                  else contextlib.nullcontext())
        with wp.ScopedDevice(self._device), stream, _out_of_memory(self._device, self.num_envs):
            self._launch_steps(wp.from_torch(slot), wp.from_torch(targets), wp.from_torch(out))
        return out

    def _launch_steps(self, slot: Any, targets: Any, out: Any) -> None:
        """The control steps of `targets` [n, H, nu] for the worlds with a row in `slot`,
        each written to `out` [n, H, nq + nv + B]; worlds without one restored after each."""
        k, d = _kernels(), self.data
        state = [d.qpos, d.qvel, d.act, d.qacc_warmstart, d.time]
        wp.launch(k.begin_call, dim=self.num_envs, inputs=[slot, *state, *self._snapshot])
        for i in range(targets.shape[1]):
            wp.launch(k.set_ctrl, dim=(self.num_envs, self._nu), inputs=[slot, targets, i, d.ctrl])
            if self._graph is not None:
                wp.capture_launch(self._graph)
            else:
                self._advance()
            wp.launch(k.end_control_step, dim=self.num_envs,
                      inputs=[slot, i, self._contact_adr, d.sensordata, *state, *self._snapshot, out])

    def memory(self) -> dict[str, int]:
        """Bytes of the model, data and snapshot arrays on the device (the step's temporaries
        and the graph's own allocations are not included)."""
        total, per_env = _device_bytes(self.model, self.data, self._snapshot)
        return {"device": total, "per_env": per_env}

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, "mujoco_version": mujoco.__version__, "mujoco_warp_version": mjw.__version__,
                "warp_version": wp.__version__, "device": self._device.name,
                "deterministic": self.deterministic, "nconmax": self.nconmax,
                "njmax": self.njmax, "diverged_state": "non_finite_state (MuJoCo Warp keeps the NaN state)"}

    # -- internals -----------------------------------------------------------------------
    def _env(self, env: np.ndarray) -> np.ndarray:
        env = np.asarray(env, dtype=np.int32).reshape(-1)
        if len(env) and (env.min() < 0 or env.max() >= self.num_envs or len(np.unique(env)) != len(env)):
            raise ValueError(f"environments must be distinct and in [0, {self.num_envs}): {env.tolist()}")
        return env

    def _advance(self) -> None:
        """One control step of physics for all worlds, ctrl already on the device."""
        for _ in range(self.settings.substeps):
            mjw.step(self.model, self.data)

    def _capture(self, required: bool) -> Any:
        """The control step as a graph; None (plain launches) where Warp cannot capture on
        this device: on the CPU before CPU capture existed, on CUDA without memory pools."""
        try:
            with wp.ScopedCapture(device=self._device) as capture:
                self._advance()
        except RuntimeError as e:
            if _is_oom(e):
                raise
            if required:
                raise BackendError(f"Warp {wp.__version__} cannot capture a graph on {self._device.alias}: {e}") from e
            if self._device.is_cuda:
                warnings.warn(f"Warp cannot capture a graph on {self._device.alias} ({e}); "
                              "stepping with plain launches, which is slower", stacklevel=3)
            return None
        return capture.graph

    def check_overflow(self) -> None:
        """LimitExceeded if any world overflowed a buffer since the call began (MuJoCo Warp
        ORs OverflowType bits into Data.overflow; the contact pool is shared, so one world's
        contacts can overflow them all)."""
        meaning = _overflow_meaning()
        flags = self.data.overflow.numpy() & sum(meaning)
        if not flags.any():
            return
        hit = [bit for bit in meaning if (flags & bit).any()]
        limits = tuple(dict.fromkeys(meaning[b][0] for b in hit if meaning[b][0]))
        envs = np.flatnonzero(flags)
        message = (f"MuJoCo Warp overflowed in environments {envs.tolist()}: {'; '.join(meaning[b][1] for b in hit)} "
                   f"(nconmax={self.nconmax}, njmax={self.njmax}); the call's results are invalid")
        fixed = [meaning[b][1] for b in hit if not meaning[b][0]]
        if fixed:  # a limit of MuJoCo Warp's own: recording again with larger buffers cannot help
            raise BackendError(f"{message}; {fixed[0]} is not a limit physrec can raise: record these motions "
                               "with backend: mujoco")
        raise LimitExceeded(f"{message}; raise {', '.join(limits)}", limits, envs)


def capacity(spec: BackendSpec, character: Character, settings: PhysicsSettings, terrain_slots: int) -> int:
    """Most environments whose arrays fit in half the device's free memory (the other half
    for the step's temporaries and the graph)."""
    device = _device(spec)
    with wp.ScopedDevice(device):
        model, data = _put(compile_world(character, max(1, int(terrain_slots)), settings), 1,
                           NCONMAX * spec.limit_scale, NJMAX * spec.limit_scale, spec.deterministic)
        per_env = _device_bytes(model, data, _snapshot(data))[1]
    if device.is_cuda:
        free = device.free_memory
    else:  # Warp asks psutil, which physrec does not depend on
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, int(free * _MEMORY_FRACTION) // per_env)


_CLAIMED: dict[str, Any] = {}  # "cuda" -> the device claimed (its lock: sim.devices, held until exit)


def tensor_device(spec: BackendSpec) -> str:
    """The torch device of this backend's GPU ("cuda:N"; "cpu" on Warp's CPU device)."""
    device = _device(spec)
    return device.alias if device.is_cuda else "cpu"


def _device(spec: BackendSpec) -> Any:
    if _IMPORT_ERROR is not None:
        raise BackendError(f"the mujoco_warp backend needs MuJoCo Warp and Warp ({_IMPORT_ERROR}); "
                           'install them with: pip install -e ".[gpu]"')
    wp.init()
    if spec.device == "cuda":
        return _claimed_gpu()
    try:
        return wp.get_device(spec.device)
    except (ValueError, RuntimeError) as e:
        raise BackendError(f"Warp has no device {spec.device!r} ({e}); devices here: "
                           f"{', '.join(d.alias for d in wp.get_devices())}") from e


def _claimed_gpu() -> Any:
    """`device: cuda`: the first visible GPU no other physrec job holds (sim.devices)."""
    if "cuda" not in _CLAIMED:
        gpus = wp.get_cuda_devices()
        if not gpus:
            raise BackendError("device 'cuda': Warp sees no CUDA device here (no NVIDIA driver, or "
                               "CUDA_VISIBLE_DEVICES hides them all); use device: cpu to run on the CPU")
        _CLAIMED["cuda"] = gpus[claim_for_job([g.pci_bus_id for g in gpus])]
    return _CLAIMED["cuda"]


def _put(mjm: mujoco.MjModel, nworld: int, nconmax: int, njmax: int, deterministic: bool) -> tuple[Any, Any]:
    """Model with per-world terrain fields, and data, on the current Warp device. On a GPU,
    contacts and constraint rows are numbered by atomics, in a different order each run,
    unless `deterministic`."""
    try:
        model = mjw.put_model(mjm, batch_sizes={f: nworld for f in _TERRAIN_FIELDS})
    except (NotImplementedError, ValueError) as e:
        raise BackendError(f"MuJoCo Warp cannot run this world: {e}") from e
    # Overflows are checked after every call and raised as LimitExceeded; the kernels' own
    # printf warnings would also fire whenever the solver reaches its iteration limit.
    model.opt.warn_overflow = 0
    model.opt.deterministic = int(mjw.DeterminismType.ALL if deterministic else mjw.DeterminismType.NONE)
    return model, mjw.make_data(mjm, nworld=nworld, nconmax=nconmax, njmax=njmax)


def _snapshot(data: Any) -> list[Any]:
    """Arrays for the state that `step` restores in the worlds it does not advance."""
    return [wp.empty_like(a) for a in (data.qpos, data.qvel, data.act, data.qacc_warmstart, data.time)]


def _check_shape(name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> None:
    """Kernels index without bounds checks: a wrongly shaped input must not reach them.
    None in `shape` matches any size."""
    got = np.shape(a)
    if len(got) != len(shape) or any(s is not None and g != s for g, s in zip(got, shape)):
        raise ValueError(f"{name} has shape {got}; expected {tuple('any' if s is None else s for s in shape)}")


def _is_oom(e: BaseException) -> bool:
    """Warp's allocators say "Failed to allocate"; a graph whose temporaries are allocated at
    its first launch fails with CUDA's "out of memory"."""
    text = str(e)
    return "Failed to allocate" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def _out_of_memory(device: Any, num_envs: int) -> Iterator[None]:
    """Warp's failed allocations as BackendOutOfMemory, which the recorder answers with fewer
    environments."""
    try:
        yield
    except RuntimeError as e:
        if not _is_oom(e):
            raise
        raise BackendOutOfMemory(f"{num_envs} environments do not fit on {device.alias} ({e})") from e


def _device_bytes(model: Any, data: Any, extra: list[Any]) -> tuple[int, int]:
    """(bytes, bytes per world) of every distinct Warp array of the model, data and `extra`
    (per-world arrays). Per world: the model's batched terrain fields, and the data arrays
    that lead with nworld or the contact pool (naconmax, naccdmax: nconmax per world)."""
    seen: set[int] = set()
    nworld = data.nworld

    def walk(obj: Any, in_data: bool) -> Iterator[tuple[int, int]]:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name, None)
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                yield from walk(v, in_data)
            elif isinstance(v, wp.array) and v.ptr is not None and v.ptr not in seen:
                seen.add(v.ptr)
                spec = getattr(f.type, "shape", ())
                grows = (spec[:1] in (("nworld",), ("naconmax",), ("naccdmax",))) if in_data \
                    else f.name in _TERRAIN_FIELDS
                yield v.capacity, v.capacity if grows else 0

    sizes = [*walk(model, False), *walk(data, True), *((a.capacity, a.capacity) for a in extra)]
    return sum(t for t, _ in sizes), sum(w for _, w in sizes) // nworld
