"""PARC's early-termination rules (compute_done with track_root), on hand-made poses."""

import numpy as np
import pytest

from physrec.motion import quat, termination
from physrec.motion.character import Character
from physrec.motion.termination import (BODY_OFFSET, OK, PARC_BODY_OFFSET_LIMITS, ROOT_POSITION, ROOT_ROTATION,
                                 TerminationSettings, check, reason)


@pytest.fixture(scope="module")
def ch():
    return Character.load()


@pytest.fixture(scope="module")
def ref(ch):
    """A standing pose, 1 environment: world body positions and root rotation."""
    jr = quat.identity((1, 14))
    jr[:, 2] = quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), np.array([1.3]))
    root_rot = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), np.array([0.4]))
    pos, _ = ch.forward_kinematics(np.array([[0.3, -0.2, 0.9]]), root_rot, jr)
    return pos, root_rot


def _check(ch, sim_pos, sim_rot, ref_pos, ref_rot, **kw):
    res = check(sim_pos, sim_rot, ref_pos, ref_rot, TerminationSettings(**kw))
    return res, reason(int(res.code[0]), int(res.body[0]), ch.body_names)


def test_parc_defaults():
    s = TerminationSettings()
    assert s.root_pos_error == pytest.approx(0.6)
    assert s.root_rot_error == pytest.approx(np.deg2rad(75.0), abs=1e-7)
    assert s.end_tolerance == pytest.approx(2.0 / 30.0)
    assert PARC_BODY_OFFSET_LIMITS == (0.7, 1.0, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 1.0, 1.2, 10.0, 1.0, 1.2, 10.0)


def test_equal_poses_do_not_terminate(ch, ref):
    pos, rot = ref
    res, why = _check(ch, pos.copy(), rot.copy(), pos, rot)
    assert res.code.tolist() == [OK] and why == ""
    assert res.body.tolist() == [-1]
    np.testing.assert_allclose(res.errors, 0.0, atol=1e-7)
    assert res.errors.shape == (1, len(termination.ERROR_COLUMNS))


def test_root_position_error(ch, ref):
    pos, rot = ref
    for d, expect in ((0.59, OK), (0.61, ROOT_POSITION)):
        moved = pos + np.array([0.0, d, 0.0])  # the whole body: offsets unchanged
        res, why = _check(ch, moved, rot, pos, rot)
        assert res.code.tolist() == [expect], d
        assert res.errors[0, 0] == pytest.approx(d)
    assert why == "root_position"
    # 3-D distance: 0.4 in x and 0.5 in z is 0.64 m.
    res, why = _check(ch, pos + np.array([0.4, 0.0, 0.5]), rot, pos, rot)
    assert why == "root_position"


def test_root_position_threshold_is_config(ch, ref):
    pos, rot = ref
    res, _ = _check(ch, pos + np.array([0.3, 0.0, 0.0]), rot, pos, rot, root_pos_error=0.25)
    assert res.code.tolist() == [ROOT_POSITION]


def test_root_angle_error(ch, ref):
    pos, rot = ref
    for deg, expect in ((74.0, OK), (76.0, ROOT_ROTATION)):
        tilt = quat.mul(quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), np.array([np.deg2rad(deg)])), rot)
        res, why = _check(ch, pos, tilt, pos, rot)
        assert res.code.tolist() == [expect], deg
        assert res.errors[0, 1] == pytest.approx(np.deg2rad(deg))
    assert why == "root_rotation"
    # The sign of the quaternion is irrelevant.
    res, _ = _check(ch, pos, -rot, pos, rot)
    assert res.code.tolist() == [OK]


def test_body_offset_head(ch, ref):
    pos, rot = ref
    head = ch.body_names.index("head")
    moved = pos.copy()
    moved[:, head] += np.array([0.0, 0.0, 1.1])  # relative to the root (root not moved): 1.1 m > 1.0 m
    res, why = _check(ch, moved, rot, pos, rot)
    assert res.code.tolist() == [BODY_OFFSET]
    assert res.body.tolist() == [head]
    assert why == "body_offset:head"
    assert res.errors[0, 2] == pytest.approx(1.1)  # ratio to the head's 1.0 m limit
    # 0.9 m is within the head's limit.
    moved[:, head] = pos[:, head] + np.array([0.0, 0.0, 0.9])
    res, why = _check(ch, moved, rot, pos, rot)
    assert res.code.tolist() == [OK] and why == ""


def test_body_offset_uses_each_bodys_limit(ch, ref):
    pos, rot = ref
    hand = ch.body_names.index("right_hand")  # limit 0.7
    moved = pos.copy()
    moved[:, hand] += np.array([0.75, 0.0, 0.0])
    res, why = _check(ch, moved, rot, pos, rot)
    assert why == "body_offset:right_hand"


def test_body_offsets_are_relative_to_the_root(ch, ref):
    """A whole body shifted by 0.5 m: root error 0.5 < 0.6 and no offset error."""
    pos, rot = ref
    res, why = _check(ch, pos + 0.5 / np.sqrt(3), rot, pos, rot)
    assert why == ""
    np.testing.assert_allclose(res.errors[0, 2], 0.0, atol=1e-9)


def test_feet_limit_is_effectively_unchecked(ch, ref):
    pos, rot = ref
    moved = pos.copy()
    for foot in ("right_foot", "left_foot"):
        moved[:, ch.body_names.index(foot)] += np.array([0.0, 5.0, 0.0])
    res, why = _check(ch, moved, rot, pos, rot)
    assert res.code.tolist() == [OK] and why == ""
    # ... but the shin, whose limit is 1.2 m, is checked.
    moved[:, ch.body_names.index("left_shin")] += np.array([0.0, 1.3, 0.0])
    res, why = _check(ch, moved, rot, pos, rot)
    assert why == "body_offset:left_shin"


def test_batch_of_environments(ch, ref):
    pos, rot = ref
    head = ch.body_names.index("head")
    sim = np.concatenate([pos, pos + np.array([1.0, 0.0, 0.0]), pos, pos])
    sim[2, head] += 1.5
    rots = np.concatenate([rot, rot, quat.mul(quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), np.array([1.4])), rot),
                           rot])
    refs = np.concatenate([pos] * 4)
    res = check(sim, rots, refs, np.concatenate([rot] * 4), TerminationSettings())
    assert res.code.tolist() == [OK, ROOT_POSITION, ROOT_ROTATION, OK]
    # env 2 has both a head offset and a root-angle error; root angle is reported.
    assert res.body.tolist() == [-1, -1, -1, -1]


def test_a_non_finite_state_terminates_in_both_twins(ch, ref):
    """NaN compares false with every limit: without its own rule a diverged environment tracks."""
    import torch
    from physrec.motion import termination_torch
    pos, rot = ref
    sim = np.concatenate([pos, pos, pos])
    sim[1, 3] = np.nan
    rots = np.concatenate([rot, rot, rot])
    rots[2, 0] = np.inf
    refs, ref_rots = np.concatenate([pos] * 3), np.concatenate([rot] * 3)
    s = TerminationSettings()
    res = check(sim, rots, refs, ref_rots, s)
    assert res.code.tolist() == [OK, termination.NON_FINITE_STATE, termination.NON_FINITE_STATE]
    assert reason(int(res.code[1]), int(res.body[1]), ch.body_names) == "non_finite_state"
    code, body, _ = termination_torch.check(*(torch.as_tensor(x) for x in (sim, rots, refs, ref_rots)), s,
                                            torch.as_tensor(s.body_offset_limits))
    assert code.tolist() == res.code.tolist() and body.tolist() == res.body.tolist()
