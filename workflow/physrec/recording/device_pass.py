"""A pass of the recorder whose control loop stays on the simulator's device (MuJoCo Warp).

The same pass as recording.host_pass.HostPass, with every per-step quantity a torch tensor
on the backend's device, shared with Warp without copies: the PD targets (the reference, or
the policy on the observation), forward kinematics, the termination check and the recording
buffers. The host sees the loop every SYNC control steps (which attempts ended, overflow
flags) and copies the buffers once, when the pass ends. The reference is looked up as
PARC's MotionLib does (float32, observations.parc.MotionTable), the CPU pass uses float64;
both start from the same reset states.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from physrec.motion import termination, termination_torch
from physrec.motion.character import Character
from physrec.motion.kinematics_torch import TorchKinematics
from physrec.observations.parc import CharacterState, MotionTable
from physrec.recording.data import Attempt, BatchMotion
from physrec.recording.passes import Pass
from physrec.sim.backend import BackendOutOfMemory
from physrec.trackers.base import Tracker, TrackerError
from physrec.trackers.pd import PDTracker

SYNC = 8  # control steps between the host's looks at the loop


class DeviceTables:
    """What every pass of a batch reads on the device: kinematics and the reference."""

    def __init__(self, character: Character, motions: list[BatchMotion], device: str) -> None:
        self.device = torch.device(device)
        self.kin = TorchKinematics(character, self.device)
        self.reference = MotionTable([m.motion for m in motions], self.device)


class DevicePass(Pass):
    """Environments of one start fraction on a device backend (one that has `step_tensors`)."""

    def __init__(self, *args, tables: DeviceTables, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tables = tables

    @staticmethod
    def inference_mode() -> contextlib.AbstractContextManager:
        return torch.inference_mode()

    def run(self, tracker: Tracker, on_finish: Callable[[int, bool], None]) -> list[Attempt]:
        """The pass; its recording buffers (observations included: 5 kB per frame and
        environment with PARC's) are not in the backend's capacity, so a device that cannot
        hold them raises BackendOutOfMemory, and the recorder takes the motions in halves."""
        try:
            return self._run(tracker, on_finish)
        except torch.cuda.OutOfMemoryError as e:
            raise BackendOutOfMemory(f"the recording buffers of {len(self.motion)} environments do not fit on "
                                     f"{self.tables.device} ({str(e).splitlines()[0]})") from e

    def _run(self, tracker: Tracker, on_finish: Callable[[int, bool], None]) -> list[Attempt]:
        if not (isinstance(tracker, PDTracker) or (self.observer is not None and hasattr(tracker, "policy"))):
            raise TrackerError(f"{tracker.describe()}: the device's control loop runs pd and learned policies "
                               "(a tracker with an observation and a torch policy) only")
        ch, sim, n, K = self.ch, self.sim, len(self.motion), int(self.steps.max())
        dev, kin, table = self.tables.device, self.tables.kin, self.tables.reference
        f32 = dict(dtype=torch.float32, device=dev)
        qpos0, qvel0, contacts0 = self._reset()

        motion = torch.as_tensor(self.motion, dtype=torch.long, device=dev)
        t0 = torch.as_tensor(self.t0, **f32)
        steps = torch.as_tensor(self.steps, dtype=torch.long, device=dev)
        Q = torch.zeros((n, K + 1, ch.nq), **f32); V = torch.zeros((n, K + 1, ch.nv), **f32)
        C = torch.zeros((n, K + 1, ch.num_bodies), dtype=torch.bool, device=dev)
        A = torch.zeros((n, K, ch.num_dof), **f32); E = torch.zeros((n, K, len(termination.ERROR_COLUMNS)), **f32)
        Q[:, 0], V[:, 0] = torch.as_tensor(qpos0, **f32), torch.as_tensor(qvel0, **f32)
        C[:, 0] = torch.as_tensor(contacts0, device=dev)
        rows = torch.arange(n, dtype=torch.int32, device=dev)
        slot = torch.full((sim.num_envs,), -1, dtype=torch.int32, device=dev)
        slot[motion] = rows
        active = torch.ones(n, dtype=torch.bool, device=dev)
        end, code_end, body_end = steps.clone(), torch.zeros_like(steps), torch.full_like(steps, -1)
        limits = torch.as_tensor(self.settings.termination.body_offset_limits, **f32)
        low, high = torch.as_tensor(ch.action_low, **f32), torch.as_tensor(ch.action_high, **f32)
        env = np.arange(n)
        obs = O = None
        if self.observer is not None:
            self.observer.start(self.motion, self.fraction)
            obs = self._observe(Q[:, 0], V[:, 0], C[:, 0], env, 0)
            if self.settings.save_obs:
                O = torch.zeros((n, K + 1, obs.shape[1]), **f32)
                O[:, 0] = obs
        reported = np.zeros(n, dtype=bool)
        for k in range(K):
            ref_pos, ref_rot, ref_joints, _ = table.frame(motion, t0 + (k + 1) * self.dt)
            if obs is None:
                targets = kin.joint_rot_to_dof(ref_joints)  # pd: the reference one control step ahead
            else:
                targets = tracker.policy(obs).to(torch.float32)  # type: ignore[attr-defined]
            bad = ~torch.isfinite(targets).all(dim=-1)  # a policy's NaN ends its attempt, not the batch
            targets = torch.where(bad[:, None], 0.0, targets).clamp(low, high)
            out = sim.step_tensors(slot, targets[:, None].contiguous())[:, 0]  # type: ignore[attr-defined]
            qpos, qvel, contacts = out[:, :ch.nq], out[:, ch.nq:ch.nq + ch.nv], out[:, ch.nq + ch.nv:] > 0
            pose = root_pos, root_rot, joint_rot = kin.qpos_to_pose(qpos)
            body_pos = kin.body_positions(root_pos, root_rot, joint_rot)
            ref_body = kin.body_positions(ref_pos, ref_rot, ref_joints)
            code, body, errors = termination_torch.check(body_pos, root_rot, ref_body, ref_rot,
                                                         self.settings.termination, limits)
            code = torch.where(bad, termination.BAD_ACTION, code)
            Q[:, k + 1], V[:, k + 1], C[:, k + 1], A[:, k], E[:, k] = qpos, qvel, contacts, targets, errors
            done = active & ((code != termination.OK) | (k + 1 >= steps))
            end = torch.where(done, k + 1, end)
            code_end, body_end = torch.where(done, code, code_end), torch.where(done, body, body_end)
            active &= ~done
            slot[motion] = torch.where(active, rows, -1)  # ended attempts keep their state
            if obs is not None:  # for every row: an ended attempt's row is a zero state, never read
                obs = self._observe(qpos, qvel, contacts, env, k + 1, pose, body_pos)
                if O is not None:
                    O[:, k + 1] = obs
            if (k + 1) % SYNC == 0 or k + 1 == K:
                sim.check_overflow()  # type: ignore[attr-defined]
                ended = ~active.cpu().numpy()
                tick = getattr(on_finish, "tick", None)
                if tick is not None:
                    tick(k + 1, K, int((~reported).sum()), self.dt)
                new = np.flatnonzero(ended & ~reported)
                if len(new):  # one copy for all of them, not one per environment
                    at = torch.as_tensor(new, device=dev)
                    ends, codes, bodies = (x.index_select(0, at).cpu().numpy() for x in (end, code_end, body_end))
                    for e, T, c, b in zip(new, ends, codes, bodies):
                        on_finish(int(e), self._success(int(e), int(T), self._reason(c, b)))
                reported |= ended
                if reported.all():
                    break
        end_h, code_h, body_h = end.cpu().numpy(), code_end.cpu().numpy(), body_end.cpu().numpy()
        host = [x.cpu().numpy() for x in (Q, V, C, A, E)]
        Q_h, V_h = host[0].astype(np.float64), host[1].astype(np.float64)
        O_h = None if O is None else O.cpu().numpy()
        return [self._attempt(e, int(end_h[e]), self._reason(code_h[e], body_h[e]), Q_h, V_h, host[2], host[3],
                              host[4], O_h) for e in range(n)]

    def _reason(self, code, body) -> str:
        return termination.reason(int(code), int(body), self.ch.body_names)

    def _observe(self, qpos, qvel, contacts, env: np.ndarray, step: int, pose=None, body_pos=None):
        """The observer's view of states on the device; kinematics reused where the caller has them."""
        kin = self.tables.kin
        if pose is None:
            pose = kin.qpos_to_pose(qpos)
            body_pos = kin.body_positions(*pose)
        state = CharacterState(**kin.parc_state(qpos, qvel, pose), contacts=contacts.to(torch.float32),
                               joint_rot=pose[2], key_pos=body_pos[:, self.observer.layout.key_index])
        return self.observer.observe(state, env, step)
