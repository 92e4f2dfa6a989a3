"""PARC dataset YAML (``{motions: [{file, weight}, ...]}``): which motions to record, with weights."""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from physrec.formats.atomic import atomic_write_text

_YAML_SUFFIXES = (".yaml", ".yml")
_ENV_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class DatasetEntry:
    """One motion of a dataset. ``file`` is kept as written so the dataset can be written back."""

    file: str
    path: Path  # absolute; symlinks are not followed, so the motion name stays the file's own
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class DatasetError(ValueError):
    """A dataset YAML is missing or invalid; the message starts with its path."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


# libyaml's safe loader where PyYAML was built with it: parsing a 10,000-motion dataset in
# pure Python took 12 s of a no-op rerun (the Snakefile reads each dataset to find inputs).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

def read_dataset(path: str | os.PathLike[str]) -> list[DatasetEntry]:
    """Read a dataset YAML, or treat any other path as a single motion (as PARC does).

    ``$VAR``/``${VAR}`` in ``file`` come from the environment. Relative files resolve against the
    YAML's folder, else the current directory (PARC's rule); if neither exists the YAML-relative
    path is returned so the caller can report it as missing.
    """
    p = Path(path)
    if p.suffix.lower() not in _YAML_SUFFIXES:
        return [DatasetEntry(file=str(path), path=_absolute(p), weight=1.0)]
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_LOADER)
    except FileNotFoundError:
        raise DatasetError(p, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(p, f"cannot read file ({e})") from e
    except yaml.YAMLError as e:
        raise DatasetError(p, f"invalid YAML ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("motions"), list):
        raise DatasetError(p, "expected a mapping with a 'motions' list")
    base = _absolute(p).parent
    return [_parse_entry(p, base, i, item) for i, item in enumerate(doc["motions"])]


def write_dataset(
    path: str | os.PathLike[str], entries: list[tuple[str, float]] | list[DatasetEntry]
) -> None:
    """Write a dataset YAML atomically, in the order given, with weights at full float precision.

    Extra keys of a DatasetEntry are written after ``file`` and ``weight`` (PARC ignores them).
    """
    motions = []
    for i, entry in enumerate(entries):
        if isinstance(entry, DatasetEntry):
            file, weight, extra = entry.file, entry.weight, entry.extra
        else:
            (file, weight), extra = entry, {}
        weight = _check_weight(path, f"motions[{i}] ({file})", weight)
        others = {k: v for k, v in extra.items() if k not in ("file", "weight")}
        motions.append({"file": str(file), "weight": weight, **others})
    atomic_write_text(path, yaml.safe_dump({"motions": motions}, sort_keys=False, allow_unicode=True))


def motion_name(path: str | os.PathLike[str]) -> str:
    """PARC's motion name: the file name without its extension (must be unique in a dataset)."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def motion_class(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """PARC's motion class: the first folder below ``root``; "" directly in ``root`` or outside it."""
    rel = os.path.relpath(_absolute(Path(path)), _absolute(Path(root)))
    parts = Path(rel).parts
    if len(parts) < 2 or parts[0] == os.pardir:
        return ""
    return parts[0]


def _absolute(p: Path) -> Path:
    return Path(os.path.abspath(p))


def _parse_entry(yaml_path: Path, base: Path, i: int, item: Any) -> DatasetEntry:
    where = f"motions[{i}]"
    if not isinstance(item, dict):
        raise DatasetError(yaml_path, f"{where} must be a mapping with 'file' and 'weight'")
    file = item.get("file")
    if not isinstance(file, str) or not file:
        raise DatasetError(yaml_path, f"{where} needs a non-empty 'file' string")
    weight = _check_weight(yaml_path, f"{where} ({file})", item.get("weight", 1.0))
    expanded = Path(_expand_vars(yaml_path, where, file))
    if expanded.is_absolute():
        resolved = expanded
    else:
        resolved = base / expanded
        if not resolved.exists() and (Path.cwd() / expanded).exists():
            resolved = Path.cwd() / expanded
    extra = {k: v for k, v in item.items() if k not in ("file", "weight")}
    return DatasetEntry(file=file, path=_absolute(resolved), weight=weight, extra=extra)


def _check_weight(path: str | os.PathLike[str], where: str, weight: Any) -> float:
    valid = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
    if not (valid and math.isfinite(weight) and weight >= 0):
        raise DatasetError(path, f"{where}: weight must be a finite number >= 0, got {weight!r}")
    return float(weight)


def expand_env(text: str) -> str:
    """Substitute $VAR and ${VAR} from the environment, as PARC does with $DATA_DIR.

    An unset variable raises KeyError with its name (a silent empty string would point
    the path somewhere else).
    """

    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in os.environ:
            raise KeyError(name)
        return os.environ[name]

    return _ENV_VAR.sub(substitute, text)


def _expand_vars(yaml_path: Path, where: str, text: str) -> str:
    try:
        return expand_env(text)
    except KeyError as e:
        raise DatasetError(yaml_path, f"{where}: environment variable ${e.args[0]} is not set (in {text!r})") from None
