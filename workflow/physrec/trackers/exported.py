"""``exported``: a policy trained anywhere (MimicKit, your own PPO), saved with ``torch.export``.

The program maps an observation [N, O] of a named layout (``observation: parc``) to PD
targets [N, D] in PARC's DOF coordinates; the recorder clips them to the bounds. How to
write one is in docs/trackers.md ("Exported policies").

``torch.export.load`` can run code from an archive, so it only ever reads the archive that
:mod:`physrec.trackers.pt2_archive` rebuilt from the checked members of the user's file.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch.export.passes import move_to_device_pass

from physrec.motion.character import Character
from physrec.trackers.base import TrackerError
from physrec.trackers.model_files import first_line
from physrec.trackers.policy import PolicyTracker, check_policy, describe_model, model_path
from physrec.trackers.pt2_archive import rebuild_archive


def load_program(path: Path, device: str = "cpu") -> torch.nn.Module:
    archive = rebuild_archive(path)
    try:
        program = torch.export.load(io.BytesIO(archive))
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
