"""A record folder read back: what `replay` and `render` need to simulate or draw an attempt
again (its episode, the recording's character and settings, its motion's source file)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from physrec import config
from physrec.formats.motion_file import MotionFileError
from physrec.formats.rollouts import read_json
from physrec.motion.character import Character
from physrec.recording.data import BatchMotion
from physrec.recording.settings import RecordSettings
from physrec.stages.index import read_indexed


class RecordFolderError(ValueError):
    """A record folder that cannot be read back (missing or changed files, unknown attempt)."""


class RecordFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        for name in ("rollouts.json", "rollouts.h5"):
            if not (self.path / name).is_file():
                raise RecordFolderError(f"{self.path / name}: not found (is {self.path} a record folder?)")
        info = read_json(self.path / "rollouts.json")
        self.env: dict = info["env_info"]["env_kwargs"]
        self.episodes: dict[str, dict] = {f"traj_{e['episode_id']}": e for e in info["episodes"]}

    @property
    def h5(self) -> Path:
        return self.path / "rollouts.h5"

    def check_attempts(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.episodes]
        if unknown:
            raise RecordFolderError(f"{self.path / 'rollouts.json'}: no attempt {', '.join(unknown)} "
                                    f"(it has traj_0 .. traj_{len(self.episodes) - 1})")

    def character(self) -> Character:
        return self._character

    @cached_property
    def _character(self) -> Character:
        return Character.load(self.env["character"])

    def settings(self) -> RecordSettings:
        """The record settings the folder was recorded with, as the record job read them."""
        return config.record_settings(config.json_section("record", json.dumps(self.env["record"]), "record"))

    def motion(self, name: str) -> BatchMotion:
        """Attempt `name`'s motion, from its source file, which must still be what was recorded."""
        ep = self.episodes[name]
        ch = self.character()
        try:
            mf = read_indexed(ep["source_path"], ep["source_sha256"], num_joints=ch.num_joints, num_bodies=ch.num_bodies)
        except MotionFileError as e:
            raise RecordFolderError(f"{e}; {name} needs its motion's terrain and reference") from e
        return BatchMotion(ep["motion"], mf.motion, mf.terrain)  # type: ignore[arg-type]
