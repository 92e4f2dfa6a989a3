import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from physrec.formats.motion_file import MotionData, MotionFile, MotionFileError, read_motion_file, write_motion_file
from physrec.formats.safe_pickle import parc_dumps
from physrec.motion.terrain import Heightfield

SAMPLES = Path(__file__).parents[2] / "shared" / "parc_samples"
EXPECTED = {"TEASER_TERRAIN": (58, (102, 102)), "civilization": (254, (50, 50)), "sfu": (15, (32, 32))}


def sample(name: str) -> Path:
    path = SAMPLES / f"{name}.pkl"
    if not path.is_file():
        pytest.skip(f"PARC sample {path} not available (expected ../shared/parc_samples next to the repo)")
    return path


class _Exploit:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _motion_dict(n=4, **overrides):
    quat = np.zeros((n, 4), np.float32)
    quat[:, 3] = 1
    d = {
        "root_pos": np.zeros((n, 3), np.float32),
        "root_rot": quat,
        "joint_rot": np.tile(quat[:, None, :], (1, 14, 1)),
        "body_contacts": np.zeros((n, 15), np.float32),
        "fps": 30,
        "loop_mode": "CLAMP",
    }
    d.update(overrides)
    return d


def _write_raw(path, motion=None, terrain=None, misc=None, *, raw_motion=None):
    outer = {
        "motion_data": raw_motion if raw_motion is not None else pickle.dumps(motion or _motion_dict()),
        "terrain_data": None if terrain is None else pickle.dumps(terrain),
        "misc_data": None if misc is None else pickle.dumps(misc),
    }
    path.write_bytes(pickle.dumps(outer))
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples_load(name):
    frames, hf_shape = EXPECTED[name]
    mf = read_motion_file(sample(name))
    m = mf.motion
    assert m.num_frames == frames
    assert m.root_pos.shape == (frames, 3) and m.root_rot.shape == (frames, 4)
    assert m.joint_rot.shape == (frames, 14, 4) and m.body_contacts.shape == (frames, 15)
    assert all(a.dtype == np.float32 for a in (m.root_pos, m.root_rot, m.joint_rot, m.body_contacts))
    assert m.fps == 30 and isinstance(m.fps, int) and m.loop_mode == "CLAMP"
    assert m.duration == pytest.approx((frames - 1) / 30)
    assert mf.terrain.shape == hf_shape and mf.terrain.hf_maxmin.shape == (*hf_shape, 2)
    assert mf.terrain.dx == pytest.approx(0.4) and isinstance(mf.terrain.dx, float)
    assert mf.warnings == []


def test_sample_round_trip_is_equal(tmp_path):
    original = read_motion_file(sample("TEASER_TERRAIN"))
    out = tmp_path / "out" / "TEASER_TERRAIN.pkl"
    write_motion_file(out, original)
    back = read_motion_file(out)
    for field in ("root_pos", "root_rot", "joint_rot", "body_contacts"):
        np.testing.assert_array_equal(getattr(back.motion, field), getattr(original.motion, field))
    assert (back.motion.fps, back.motion.loop_mode) == (original.motion.fps, original.motion.loop_mode)
    for field in ("hf", "hf_maxmin", "min_point"):
        np.testing.assert_array_equal(getattr(back.terrain, field), getattr(original.terrain, field))
    assert back.terrain.dx == original.terrain.dx
    assert list(back.misc) == list(original.misc)
    np.testing.assert_array_equal(back.misc["path_nodes"], original.misc["path_nodes"])


def test_write_is_byte_deterministic(tmp_path):
    mf = read_motion_file(sample("civilization"))
    write_motion_file(tmp_path / "a.pkl", mf)
    write_motion_file(tmp_path / "b.pkl", read_motion_file(sample("civilization")))
    assert (tmp_path / "a.pkl").read_bytes() == (tmp_path / "b.pkl").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a.pkl", "b.pkl"]  # no temp files left


def _structure(obj):
    """Nested layout (keys, types, dtypes, shapes) without values."""
    if isinstance(obj, dict):
        return [(k, _structure(v)) for k, v in obj.items()]
    if isinstance(obj, bytes):
        return ("bytes", _structure(pickle.loads(obj)))
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape)
    return type(obj).__name__


def _globals(data: bytes) -> set[tuple[str, str]]:
    """(module, name) of every global an inner pickle imports."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if isinstance(arg, str):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_written_layout_matches_parc(tmp_path, name):
    src = sample(name)
    out = tmp_path / f"{name}.pkl"
    write_motion_file(out, read_motion_file(src))
    ours, parcs = pickle.loads(out.read_bytes()), pickle.loads(src.read_bytes())
    assert _structure(ours) == _structure(parcs)
    for key, value in ours.items():  # only globals that PARC's numpy 1.x files use themselves
        if value is not None:
            assert _globals(value) <= _globals(parcs[key])


def test_default_hf_maxmin_written(tmp_path):
    hf = np.arange(6, dtype=np.float32).reshape(2, 3)
    motion = MotionData(**_motion_dict())
    terrain = Heightfield(hf=hf, min_point=np.zeros(2, np.float32), dx=0.5)
    write_motion_file(tmp_path / "m.pkl", MotionFile(motion=motion, terrain=terrain, misc=None))
    back = read_motion_file(tmp_path / "m.pkl")
    np.testing.assert_array_equal(back.terrain.hf_maxmin[..., 0], hf + 1)
    np.testing.assert_array_equal(back.terrain.hf_maxmin[..., 1], hf - 1)
    assert back.misc is None
    assert pickle.loads((tmp_path / "m.pkl").read_bytes())["misc_data"] is None


def test_missing_file(tmp_path):
    with pytest.raises(MotionFileError, match=r"nope\.pkl: file not found"):
        read_motion_file(tmp_path / "nope.pkl")


def test_truncated_sample(tmp_path):
    data = sample("sfu").read_bytes()
    path = tmp_path / "half.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MotionFileError, match=f"^{path}: corrupt or truncated"):
        read_motion_file(path)


def test_malicious_outer_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"motion_data": _Exploit(os.system, f"touch {marker}")}))
    with pytest.raises(MotionFileError, match=f"^{path}: refused to unpickle global"):
        read_motion_file(path)
    assert not marker.exists()


def test_malicious_motion_data(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps(_motion_dict(root_pos=_Exploit(eval, f"open({str(marker)!r}, 'w').close()")))
    path = _write_raw(tmp_path / "evil.pkl", raw_motion=raw)
    with pytest.raises(MotionFileError, match=r"motion_data: refused to unpickle global 'builtins\.eval'"):
        read_motion_file(path)
    assert not marker.exists()


def test_unsafe_misc_data_is_dropped_with_warning(tmp_path):
    marker = tmp_path / "pwned"
    misc = {"opt:body_constraints": _Exploit(os.system, f"touch {marker}")}
    path = _write_raw(tmp_path / "m.pkl", misc=misc)
    mf = read_motion_file(path)
    assert mf.misc is None and mf.motion.num_frames == 4
    assert len(mf.warnings) == 1 and mf.warnings[0].startswith(f"{path}: misc_data dropped (unsafe content)")
    assert not marker.exists()


def test_nan_in_root_pos(tmp_path):
    root_pos = np.zeros((4, 3), np.float32)
    root_pos[2, 1] = np.nan
    path = _write_raw(tmp_path / "m.pkl", _motion_dict(root_pos=root_pos))
    with pytest.raises(MotionFileError, match="root_pos is not finite at frame 2"):
        read_motion_file(path)


def test_wrong_joint_rot_shape(tmp_path):
    path = _write_raw(tmp_path / "m.pkl", _motion_dict(joint_rot=np.zeros((4, 13, 4), np.float32)))
    with pytest.raises(MotionFileError, match=r"joint_rot has shape \(4, 13, 4\), expected \[n, 14, 4\]"):
        read_motion_file(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fps": 29.97}, "fps must be an integer from 1 to 10000"),
        ({"fps": 0}, "fps must be an integer from 1 to 10000"),
        ({"loop_mode": "BOUNCE"}, "loop_mode must be CLAMP or WRAP"),
        ({"body_contacts": np.zeros((3, 15), np.float32)}, "disagree on the number of frames"),
        ({"root_rot": np.full((4, 4), 0.9, np.float32)}, "root_rot is not a unit quaternion at frame 0"),
    ],
)
def test_invalid_motion_fields(tmp_path, overrides, message):
    path = _write_raw(tmp_path / "m.pkl", _motion_dict(**overrides))
    with pytest.raises(MotionFileError, match=message):
        read_motion_file(path)


def test_too_few_frames_and_missing_keys(tmp_path):
    with pytest.raises(MotionFileError, match="too few frames: 1 < 2"):
        read_motion_file(_write_raw(tmp_path / "one.pkl", _motion_dict(n=1)))
    d = _motion_dict()
    del d["fps"]
    with pytest.raises(MotionFileError, match="missing keys: fps"):
        read_motion_file(_write_raw(tmp_path / "nofps.pkl", d))


def test_lenient_fields_are_normalised_quaternions_kept_as_written(tmp_path):
    d = _motion_dict(fps=np.float64(30.0), root_pos=np.zeros((4, 3), np.float64))
    del d["loop_mode"]
    d["root_rot"] = d["root_rot"] * np.float32(1.005)
    terrain = {"hf": np.zeros((3, 3)), "min_point": [0.0, 1.0], "dx": np.float32(0.4)}
    mf = read_motion_file(_write_raw(tmp_path / "m.pkl", d, terrain=terrain))
    assert mf.motion.fps == 30 and type(mf.motion.fps) is int and mf.motion.loop_mode == "CLAMP"
    assert mf.motion.root_pos.dtype == np.float32
    # PARC's MotionLib keeps non-unit quaternions (a policy sees them scaled); so does reading,
    np.testing.assert_array_equal(mf.motion.root_rot, d["root_rot"])
    assert mf.terrain.hf_maxmin is None and type(mf.terrain.dx) is float
    # while writing normalises them.
    write_motion_file(tmp_path / "w.pkl", mf)
    again = read_motion_file(tmp_path / "w.pkl").motion
    np.testing.assert_allclose(np.linalg.norm(again.root_rot, axis=-1), 1, atol=1e-6)


def test_invalid_terrain(tmp_path):
    terrain = {"hf": np.full((3, 3), np.inf), "min_point": [0.0, 0.0], "dx": 0.4}
    with pytest.raises(MotionFileError, match="terrain_data.hf"):
        read_motion_file(_write_raw(tmp_path / "a.pkl", terrain=terrain))
    terrain = {"hf": np.zeros((3, 3)), "min_point": [0.0, 0.0], "dx": -1}
    with pytest.raises(MotionFileError, match="dx must be a number from 0.001"):
        read_motion_file(_write_raw(tmp_path / "b.pkl", terrain=terrain))


def test_not_a_motion_file(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(parc_dumps([1, 2, 3]))
    with pytest.raises(MotionFileError, match="not a PARC motion file"):
        read_motion_file(path)
