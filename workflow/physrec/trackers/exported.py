"""``exported``: a policy trained anywhere (MimicKit, your own PPO), saved with ``torch.export``.

The program maps an observation [N, O] of a named layout (``observation: parc``) to PD
targets [N, D] in PARC's DOF coordinates; the recorder clips them to the bounds. How to
write one is in the README ("Exported policies").

``torch.export.load`` unpickles some archive members with ``weights_only=False``
(pickled weights and constants, sample inputs), which can run code. So before loading,
every member that is not the graph's JSON, a raw tensor payload or archive metadata must
load with ``torch.load(weights_only=True)``; an archive with anything else is refused.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch.export.passes import move_to_device_pass

from physrec.motion.character import Character
from physrec.trackers.base import TrackerError
from physrec.trackers.policy import PolicyTracker, check_policy, describe_model, first_line, load_tensors, model_path

_METADATA = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")


def _raw_payloads(zf: zipfile.ZipFile, prefix: str, what: str) -> set[str]:
    """Members that hold raw tensor bytes (use_pickle false in the weights/constants configs)."""
    raw = set()
    for config in _CONFIGS:
        name = prefix + config
        if name not in zf.namelist():
            continue
        try:
            entries = json.loads(zf.read(name))["config"]
        except (ValueError, KeyError, TypeError) as e:
            raise TrackerError(f"{what}: unreadable {config} ({first_line(e)})") from None
        folder = name.rsplit("/", 1)[0] + "/"
        raw |= {folder + e["path_name"] for e in entries.values()
                if isinstance(e, dict) and e.get("use_pickle") is False and "path_name" in e}
    return raw


def check_archive(path: Path) -> None:
    """Refuse a .pt2 archive that holds pickled objects other than tensors."""
    what = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise TrackerError(f"{what}: not a torch.export archive (.pt2): {first_line(e)}") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
        if prefix + "models/model.json" not in names:
            raise TrackerError(f"{what}: not a torch.export archive (.pt2): no models/model.json")
        raw = _raw_payloads(zf, prefix, what)
        for name in names:
            inner = name.removeprefix(prefix)
            if name in raw or inner in _METADATA or inner in _CONFIGS or inner.startswith("models/"):
                continue
            load_tensors(zf.read(name), "cpu", f"{what} [{inner}]")


def load_program(path: Path, device: str = "cpu") -> torch.nn.Module:
    check_archive(path)
    try:
        program = torch.export.load(path)
        # Not module().to(device): that leaves the tensors a program made in its forward
        # (lifted constants) on the CPU, and a CUDA policy then fails on its first call.
        return move_to_device_pass(program, device).module()
    except Exception as e:  # deserialising a program can fail in many ways; say which file
        raise TrackerError(f"{path}: torch.export.load failed: {first_line(e)}") from None


def make(spec: dict, character: Character, device: str = "cpu") -> PolicyTracker:
    path = model_path(spec)
    observation = spec.get("observation", "parc")
    module = load_program(path, device)
    check_policy(module, str(path), character, observation, device)
    return PolicyTracker("exported", module, observation,
                         describe_model("exported", path, f"torch.export program on observation '{observation}'"))
