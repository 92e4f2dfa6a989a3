"""Hostile and damaged model files: crafted .pt2 programs and PARC checkpoints never run code,
zip bombs are refused before anything is inflated, and the inspection commands refuse FIFOs and
/dev/zero. Each crafted archive follows a path by which torch's own loader runs a payload or
allocates what an archive declares."""

import io
import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from first_target_policy import FirstTargetFrame
from physrec.cli import main as physrec_main
from physrec.trackers import model_files
from physrec.trackers.base import TrackerError, make_tracker
from physrec.trackers.parc_policy import random_state_dict

SPEC = {"kind": "exported", "observation": "parc"}


class _Evil:
    def __reduce__(self):
        return (os.system, ('touch "$PHYSREC_TEST_MARKER"',))  # the shell reads the marker's path


def _payload() -> bytes:
    """The pickled payload, padded to whole float32s so torch reads it as a raw tensor first
    (pickle ignores what follows its STOP)."""
    data = pickle.dumps(_Evil())
    return data + bytes(-len(data) % 4)


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "code_ran"
    monkeypatch.setenv("PHYSREC_TEST_MARKER", str(path))
    return path


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory, ch_module) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    n = torch.export.Dim("n", min=1)
    torch.export.save(torch.export.export(FirstTargetFrame(ch_module), (torch.zeros(2, 1312),),
                                          dynamic_shapes={"obs": {0: n}}), path)
    return path


@pytest.fixture(scope="module")
def ch_module():
    from physrec.motion.character import Character
    return Character.load("builtin:humanoid")


def _members(path: Path) -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = names[0].split("/", 1)[0] + "/"
        return root, {n[len(root):]: zf.read(n) for n in names}


def _craft(good: Path, out: Path, edit) -> Path:
    """`good` with its members (inner name -> bytes) changed by `edit`, written as a zip."""
    root, members = _members(good)
    edit(members)
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(root + name, data)
    return out


def _config_edit(config: str, entries: dict, payloads: dict[str, bytes]):
    def edit(members):
        cfg = json.loads(members[config])
        cfg["config"].update(entries)
        members[config] = json.dumps(cfg).encode()
        folder = config.rsplit("/", 1)[0] + "/"
        members.update({folder + k: v for k, v in payloads.items()})
    return edit


_META = {"dtype": 7, "sizes": [{"as_int": 1}], "requires_grad": False, "device": {"type": "cpu", "index": None},
         "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}
WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"


def _entry(path_name: str, use_pickle: bool = False, meta=_META) -> dict:
    return {"path_name": path_name, "is_param": False, "use_pickle": use_pickle, "tensor_meta": meta}


def _torch_save_bytes(value) -> bytes:
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


# Each: (case, edit of the archive's members, the refusal message)
CODE_PATHS = [
    ("opaque object declared raw",  # torch unpickles opaque_obj_* by name, whatever use_pickle says
     _config_edit(CONSTANTS, {"evil": _entry("opaque_obj_0")}, {"opaque_obj_0": _payload()}),
     "payload 'opaque_obj_0' is not a plain tensor payload"),
    ("custom object", _config_edit(CONSTANTS, {"evil": _entry("custom_obj_0")}, {"custom_obj_0": _payload()}),
     "payload 'custom_obj_0' is not a plain tensor payload"),
    ("one payload listed under both flags",  # raw for a member check, pickled for torch
     _config_edit(WEIGHTS, {"raw": _entry("weight_9"), "pickled": _entry("weight_9", use_pickle=True)},
                  {"weight_9": _payload()}),
     "entry 'pickled': a pickled object (use_pickle)"),
    ("pickled constant", _config_edit(CONSTANTS, {"evil": _entry("tensor_9", use_pickle=True)},
                                      {"tensor_9": _payload()}),
     "entry 'evil': a pickled object (use_pickle)"),
    ("sample inputs as a bare pickle",
     lambda m: m.update({"data/sample_inputs/model.pt": _payload()}),
     "[data/sample_inputs/model.pt]: refused: it holds pickled objects other than tensors"),
    ("sample inputs as a torch archive with a global",  # torch retries these with weights_only=False
     lambda m: m.update({"data/sample_inputs/model.pt": _torch_save_bytes(((_Evil(),), {}))}),
     "[data/sample_inputs/model.pt]: refused: it holds pickled objects other than tensors"),
    ("an AOTInductor library", lambda m: m.update({"data/aotinductor/model/model.so": b"\x7fELF"}),
     "refused member data/aotinductor/model/model.so"),
    ("a legacy-format member", lambda m: m.update({"serialized_state_dict.pt": _payload()}),
     "refused member serialized_state_dict.pt"),
    ("an extra member", lambda m: m.update({"extra/notes.txt": b"hello"}), "refused member extra/notes.txt"),
    ("a config entry with more fields", _config_edit(WEIGHTS, {"x": {**_entry("weight_0"), "pickle": True}}, {}),
     "entry 'x': not a tensor entry"),
    ("a symbolic size", _config_edit(WEIGHTS, {"x": _entry("weight_0", meta={**_META, "sizes": [{"as_expr": "s0"}]})},
                                     {}),
     "entry 'x' size: expected a concrete integer"),
]


@pytest.mark.parametrize("case,edit,message", CODE_PATHS, ids=[c[0] for c in CODE_PATHS])
def test_crafted_programs_are_refused_without_running_code(tmp_path, good_pt2, ch_module, marker, case, edit,
                                                            message):
    bad = _craft(good_pt2, tmp_path / "bad.pt2", edit)
    with pytest.raises(TrackerError, match=re.escape(str(bad)) + ".*" + re.escape(message)):
        make_tracker({**SPEC, "model": str(bad)}, ch_module)
    assert not marker.exists(), "loading an exported program ran code"


def test_torch_alone_runs_the_opaque_object_payload(tmp_path, good_pt2, marker):
    """The attack the first case refuses is real in this torch: its own loader runs the payload."""
    bad = _craft(good_pt2, tmp_path / "bad.pt2", CODE_PATHS[0][1])
    try:
        torch.export.load(bad)
    except Exception:
        pass
    if not marker.exists():
        pytest.skip(f"torch {torch.__version__} no longer unpickles opaque objects declared raw")


def test_the_rebuilt_program_is_the_same_program(tmp_path, good_pt2, ch_module):
    from physrec.trackers.exported import load_program
    obs = torch.randn(3, 1312, generator=torch.Generator().manual_seed(0))
    ours = load_program(good_pt2)(obs)
    theirs = torch.export.load(good_pt2).module()(obs)
    assert torch.equal(ours, theirs)


def _patch_declared_size(data: bytes, member_suffix: str, size: int) -> bytes:
    """Zip bytes whose central directory declares `size` bytes for the member: what a bomb says."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        name = bytes(out[pos + 46: pos + 46 + name_len]).decode()
        if name.endswith(member_suffix):
            struct.pack_into("<I", out, pos + 24, size)
        pos = out.find(b"PK\x01\x02", pos + 46)
    return bytes(out)


def test_zip_bombs_are_refused_before_reading(tmp_path, good_pt2, ch_module, monkeypatch):
    # A weight payload that declares 4 GB: refused from the directory, nothing inflated.
    bomb = tmp_path / "bomb.pt2"
    bomb.write_bytes(_patch_declared_size(good_pt2.read_bytes(), "models/model.json", 4_000_000_000))
    with pytest.raises(TrackerError, match=re.escape(f"{bomb}: members decompress to more than physrec's limit "
                                                     "for model files (MAX_MODEL_MB, 1024 MB")):
        make_tracker({**SPEC, "model": str(bomb)}, ch_module)
    # An honest bomb (1 MB of zeros, deflated) against a smaller limit: every member counts.
    monkeypatch.setattr(model_files, "MAX_MODEL_BYTES", 500_000)
    honest = tmp_path / "honest.pt2"
    root, members = _members(good_pt2)
    with zipfile.ZipFile(honest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(root + name, data)
        zf.writestr(root + "data/weights/weight_99", bytes(1_000_000))
    assert honest.stat().st_size < 100_000
    with pytest.raises(TrackerError, match="members decompress to more than"):
        make_tracker({**SPEC, "model": str(honest)}, ch_module)


def test_a_tensor_larger_than_its_payload_is_refused(tmp_path, good_pt2, ch_module):
    """torch makes zeros of the declared shape for an empty payload: a few bytes asking for 40 GB."""
    huge = {**_META, "sizes": [{"as_int": 100_000}, {"as_int": 100_000}], "strides": [{"as_int": 100_000},
                                                                                       {"as_int": 1}]}
    bad = _craft(good_pt2, tmp_path / "bad.pt2", _config_edit(CONSTANTS, {"z": _entry("tensor_9", meta=huge)},
                                                              {"tensor_9": b""}))
    with pytest.raises(TrackerError, match="entry 'z': the tensor spans 40000000000 bytes, its payload holds 0"):
        make_tracker({**SPEC, "model": str(bad)}, ch_module)


def test_a_member_stored_twice_is_refused(tmp_path, good_pt2, ch_module):
    root, members = _members(good_pt2)
    bad = tmp_path / "twice.pt2"
    with pytest.warns(UserWarning), zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(root + name, data)
        zf.writestr(root + "data/constants/tensor_0", _payload())
    with pytest.raises(TrackerError, match="member '.*tensor_0' is stored twice"):
        make_tracker({**SPEC, "model": str(bad)}, ch_module)


def test_checkpoint_zip_bomb_and_legacy_format_are_refused(tmp_path, ch_module):
    good = tmp_path / "model.pt"
    torch.save(random_state_dict(1312, 28, (16, 8, 4)), good)
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(_patch_declared_size(good.read_bytes(), "/data/0", 4_000_000_000))
    with pytest.raises(TrackerError, match=re.escape(f"{bomb}: members decompress to more than")):
        make_tracker({"kind": "parc", "model": str(bomb)}, ch_module)
    legacy = tmp_path / "legacy.pt"
    torch.save(random_state_dict(1312, 28, (16, 8, 4)), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(TrackerError, match="legacy format from before PyTorch 1.6"):
        make_tracker({"kind": "parc", "model": str(legacy)}, ch_module)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_inspection_commands_refuse_fifos_and_dev_zero(tmp_path, kind, capsys):
    """parc-act and parc-obs read their inputs like the workflow: regular files within a limit."""
    special = tmp_path / f"special_{kind}"
    _fifo(special) if kind == "fifo" else os.symlink("/dev/zero", special)
    expected = "not a regular file (a FIFO)" if kind == "fifo" else "not a regular file (a character device)"
    model = tmp_path / "model.pt"
    torch.save(random_state_dict(1312, 28, (16, 8, 4)), model)
    obs = tmp_path / "obs.npy"
    np.save(obs, np.zeros((2, 1312), np.float32))
    motion = Path(__file__).resolve().parents[2] / "shared" / "parc_samples" / "TEASER_TERRAIN.pkl"
    out = str(tmp_path / "out.npy")
    runs = [["parc-act", "--model", str(special), "--obs", str(obs), "--out", out],
            ["parc-act", "--model", str(model), "--obs", str(special), "--out", out]]
    if motion.is_file():
        runs.append(["parc-obs", "--reference", str(motion), "--states", str(special), "--out", out])
    for argv in runs:
        assert physrec_main(argv) == 1
        err = capsys.readouterr().err
        assert f"{special}: {expected}" in err, (argv, err)
