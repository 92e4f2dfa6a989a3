"""The observer in slices: the recorder computes a control step's observations on the job's
threads, a slice of the environments each, and must record the bits of one call for them all."""

import numpy as np
import pytest
import torch

from physrec.demo import demo_motions
from physrec.motion.reference import reference_state
from physrec.observations.observer import Observer
from physrec.recording.data import BatchMotion
from physrec.recording.plan import build_reference


@pytest.mark.parametrize("size", [1, 7, 32])
def test_slices_of_a_batch_observe_what_one_call_does(ch, size):
    """100 environments on the demo's motions, in perturbed reference states: observations of
    slices of `size` rows, after one `prepare` for all, equal one call for all, bit for bit; also
    for a later step on a subset of the environments (ended attempts leave gaps). Without the
    prepared whole-batch part (the heading's atan2), torch's vectorised and scalar kernels give
    rows of some slices other bits on AVX-512 machines."""
    motions = [BatchMotion(n, mf.motion, mf.terrain) for n, mf in demo_motions().items()]
    rng = np.random.default_rng(0)
    n = 100
    motion = rng.integers(0, len(motions), n)
    observer = Observer("parc", ch, [m.motion for m in motions], [m.terrain for m in motions], 1 / 30)
    observer.start(motion, 0.2)
    ref = build_reference(ch, motions)
    qpos, qvel = reference_state(ref, motion, 0.2 * ref.length[motion] + rng.uniform(0, 0.5, n))
    qpos = qpos + rng.normal(0, 0.1, qpos.shape)  # off the reference, rotations included (renormalised)
    qvel = qvel + rng.normal(0, 1.0, qvel.shape)
    contacts = rng.integers(0, 2, (n, ch.num_bodies)).astype(bool)
    root_pos, root_rot, joint_rot = ch.qpos_to_pose(qpos)
    body_pos = ch.body_positions(root_pos, root_rot, joint_rot)
    with observer.inference_mode():
        for step, env in ((0, np.arange(n)), (3, np.sort(rng.choice(n, 71, replace=False)))):
            state = (qpos[env], qvel[env], contacts[env], joint_rot[env], body_pos[env])
            whole = observer(state[0], state[1], state[2], env, step, *state[3:])
            sight = observer.prepare(env, step, qpos[env])
            parts = [observer.rows(sight, s, *(x[s] for x in state))
                     for s in (slice(i, i + size) for i in range(0, len(env), size))]
            assert torch.equal(torch.cat(parts), whole), (step, size)
