"""CPU backend: MuJoCo through `mujoco.rollout`, one model copy per environment.

All copies come from one compiled world (sim.world) and differ only in their terrain geoms,
so their sizes match and one `rollout` call steps any subset of environments on C++
threads, with no Python per physics step. Each environment simulates only its own
terrain, so a step's cost does not grow with the batch.
"""

from __future__ import annotations

import copy
from typing import Any

import mujoco
import numpy as np
from mujoco import rollout

from physrec.motion.character import Character
from physrec.sim.backend import BackendSpec, Steps
from physrec.sim.world import PhysicsSettings, box_geom_fields, compile_world, world_bvh_aabb

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS
ROLLOUT_BYTES = 256 << 20


class MujocoBackend:
    """Environments as MjModel copies stepped by a persistent rollout thread pool."""

    name = "mujoco"

    def __init__(self, spec: BackendSpec, character: Character, settings: PhysicsSettings, num_envs: int,
                 terrain_slots: int) -> None:
        self.character, self.settings = character, settings
        self.num_envs, self.terrain_slots = int(num_envs), max(1, int(terrain_slots))
        base = compile_world(character, self.terrain_slots, settings)
        self._base = base
        self.models = [base] * self.num_envs  # until set_terrain gives each its own
        self.threads = max(1, int(spec.threads))
        self._datas = [mujoco.MjData(base) for _ in range(self.threads)]
        self._rollout = rollout.Rollout(nthread=self.threads if self.threads > 1 else 0)
        self.nstate = mujoco.mj_stateSize(base, _STATE)
        self._nq, self._nv = base.nq, base.nv
        self._contact_adr = base.sensor_adr[-character.num_bodies:]
        self.states = np.zeros((self.num_envs, self.nstate))
        # time, qpos, qvel, act, ... of a reset MjData: the same on every terrain (geoms hold no state)
        self._reset_state = np.zeros(self.nstate)
        mujoco.mj_getState(base, mujoco.MjData(base), self._reset_state, _STATE)

    def close(self) -> None:
        self._rollout.close()

    def __enter__(self) -> "MujocoBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_terrain(self, env: np.ndarray, boxes: np.ndarray) -> None:
        """Environments given the same terrain share one model copy: a sampling search puts
        hundreds of environments on each motion's terrain, and a copy costs ~100 kB."""
        env = np.asarray(env)
        rows: dict[bytes, list[int]] = {}
        for j in range(len(env)):
            rows.setdefault(np.ascontiguousarray(boxes[j]).tobytes(), []).append(j)
        first = np.array([js[0] for js in rows.values()], dtype=np.int64)
        slots, m0 = self.terrain_slots, self._base
        fields = box_geom_fields(np.asarray(boxes)[first])
        # The world body's bounding volumes: MuJoCo culls contacts with them.
        nodes = slice(m0.body_bvhadr[0], m0.body_bvhadr[0] + m0.body_bvhnum[0])
        bvh = world_bvh_aabb(m0.bvh_child[nodes], m0.bvh_nodeid[nodes], m0.bvh_depth[nodes],
                             fields["geom_pos"], fields["geom_aabb"])
        for u, js in enumerate(rows.values()):
            m = copy.copy(m0)  # a fresh copy: a model another environment keeps is never changed
            for name, value in fields.items():
                getattr(m, name)[:slots] = value[u]
            m.bvh_aabb[nodes] = bvh[u]
            for j in js:
                self.models[env[j]] = m

    def reset(self, env: np.ndarray, qpos: np.ndarray, qvel: np.ndarray, contacts: bool = True) -> np.ndarray | None:
        env = np.asarray(env)
        if not contacts:  # the state alone: a freshly reset one with qpos and qvel put in, no forward pass
            self.states[env] = self._reset_state
            self.states[env, 1:1 + self._nq] = qpos
            self.states[env, 1 + self._nq:1 + self._nq + self._nv] = qvel
            return None
        found = np.zeros((len(env), self.character.num_bodies), dtype=bool)
        d = self._datas[0]
        for j, e in enumerate(env):
            m = self.models[e]
            mujoco.mj_resetData(m, d)
            d.qpos[:], d.qvel[:] = qpos[j], qvel[j]
            mujoco.mj_forward(m, d)
            mujoco.mj_getState(m, d, self.states[e], _STATE)
            found[j] = d.sensordata[self._contact_adr] > 0
        return found

    def step(self, env: np.ndarray, targets: np.ndarray) -> Steps:
        env = np.asarray(env)
        n, h = targets.shape[0], targets.shape[1]
        if n == 0:
            return Steps(np.zeros((0, h, self._nq)), np.zeros((0, h, self._nv)),
                         np.zeros((0, h, self.character.num_bodies), dtype=bool))
        sub = self.settings.substeps
        # rollout returns every substep's state: calls of at most ROLLOUT_BYTES of it (a
        # search steps tens of thousands of environments at once).
        rows = max(2 * self.threads, ROLLOUT_BYTES // (h * sub * self.nstate * 8))
        parts = [self._step_rows(env[i:i + rows], targets[i:i + rows]) for i in range(0, n, rows)]
        return Steps(*(np.concatenate(x) for x in zip(*parts))) if len(parts) > 1 else Steps(*parts[0])

    def _step_rows(self, env: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, h, sub = len(env), targets.shape[1], self.settings.substeps
        controls = np.repeat(targets, sub, axis=1)
        start_time = self.states[env, 0]  # a copy (fancy indexing), taken before the states move on
        # Few large chunks: per-chunk dispatch costs more than the small imbalance between envs.
        out_state, out_sens = self._rollout.rollout(
            [self.models[e] for e in env], self._datas, self.states[env], controls, nstep=h * sub,
            initial_warmstart=np.zeros((n, self._nv)), chunk_size=max(1, n // (2 * self.threads)))
        last = slice(sub - 1, None, sub)
        seq = out_state[:, last]
        self.states[env] = seq[:, -1]
        qpos, qvel = seq[..., 1:1 + self._nq], seq[..., 1 + self._nq:1 + self._nq + self._nv]
        diverged = _auto_reset_steps(start_time, out_state[..., 0], sub, h)
        if diverged is not None:
            qpos, qvel = qpos.copy(), qvel.copy()
            qpos[diverged], qvel[diverged] = np.nan, np.nan
        return qpos, qvel, out_sens[:, last][..., self._contact_adr] > 0

    def memory(self) -> dict[str, int]:
        models = sum(int(m.nbuffer) for m in {id(m): m for m in self.models}.values())
        per_env = int(self._base.nbuffer) + self.states[0].nbytes  # an environment with a terrain of its own
        return {"host": models + self.states.nbytes + sum(int(d.nbuffer) for d in self._datas), "per_env": per_env}

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, "mujoco_version": mujoco.__version__, "device": "cpu",
                "diverged_state": "non_finite_state (mj_step's auto-reset detected)"}



def _auto_reset_steps(start_time: np.ndarray, t: np.ndarray, sub: int, h: int) -> np.ndarray | None:
    """[n, h] mask of the control steps at and after mj_step reset a diverged state (None: none did).

    mj_step puts an environment whose state went non-finite or huge back to its initial pose and
    time 0, which would read as a sudden root_position failure; the MuJoCo Warp backend leaves
    the NaN in the state. Both report it as `non_finite_state` (motion/termination.py): here the
    states from the reset on are NaN. `t` [n, h * sub]: each substep's simulation time."""
    before = np.concatenate([start_time[:, None], t[:, :-1]], axis=1)
    reset = t <= before  # time only moves forward, unless mj_step reset the data
    if not reset.any():
        return None
    first = np.where(reset.any(axis=1), reset.argmax(axis=1), t.shape[1]) // sub
    return np.arange(h)[None] >= first[:, None]
