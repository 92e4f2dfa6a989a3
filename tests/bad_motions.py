"""The corpus of bad inputs: a dataset of good motions beside one file of each kind of broken, hostile or
odd PARC input, each with the manifest error it must get (docs/bad_inputs.md is its table).

Shared by test_indexing.py and test_workflow.py (pytest puts tests/ on sys.path). The files are small:
the limits classes run under CORPUS_LIMITS and CORPUS_MAX_DURATION_S, which the tests pass to index
(the workflow: config `limits` and `record.max_duration_s`). `python tests/bad_motions.py` prints the table for docs/bad_inputs.md.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from physrec.demo import demo_motions
from physrec.formats.dataset_yaml import write_dataset
from physrec.formats.motion_file import MotionData, MotionFile, write_motion_file
from physrec.formats.safe_pickle import parc_dumps
from physrec.formats.text import one_line
from physrec.motion.terrain import Heightfield

# Small, so that each limit has a small file beyond it; the good motions (73 frames, 8x8 cells) are within.
CORPUS_LIMITS = {"max_file_mb": 0.5, "max_frames": 400, "max_terrain_cells": 2000, "max_misc_mb": 0.05,
                 "max_collision_boxes": 100}
CORPUS_MAX_DURATION_S = 10.0  # record.max_duration_s, which index checks too
MARKER = "PWNED"  # a file of this name appears beside the dataset if any input ran code
LONG_NAME = "long_" + "n" * 245  # 250 characters: <name>_rec.pkl would pass the 255-byte limit


@dataclass(frozen=True)
class Case:
    key: str
    cls: str  # the class of bad input, as docs/bad_inputs.md groups them
    rel: str  # path below the dataset's folder (its first folder is the manifest's class)
    input: str  # what the file is
    expect: str  # a piece of its manifest error; of its warnings for a motion that must be recorded
    write: Callable[[Path, Path], None]  # (path, marker) -> writes the file (or does nothing)
    valid: bool = False


class _Exploit:
    """Pickles to os.system(<touch marker>): loading it with plain pickle would create the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Call:
    """Pickles as a call of func(*args) (then a state, if given): how a hostile file names numpy's constructors."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, under its numpy 2 name


def _good(name: str = "stand_flat") -> MotionFile:
    return demo_motions()[name]


def _fields(m: MotionData, **changes) -> dict:
    d = {"root_pos": m.root_pos, "root_rot": m.root_rot, "joint_rot": m.joint_rot,
         "body_contacts": m.body_contacts, "fps": m.fps, "loop_mode": m.loop_mode}
    return {**d, **changes}


def _terrain_fields(t: Heightfield, **changes) -> dict:
    return {"hf": t.hf, "hf_maxmin": t.hf_maxmin, "min_point": t.min_point, "dx": t.dx, **changes}


def _sections(path: Path, motion=None, terrain=None, misc=None, outer_extra=None) -> None:
    """A PARC-layout file written with plain pickle, for contents write_motion_file would refuse.
    A section given as a dict is pickled; bytes are written as they are."""
    def pack(v):
        return pickle.dumps(v, protocol=4) if isinstance(v, dict) else v
    good = _good()
    outer = {"motion_data": pack(_fields(good.motion) if motion is None else motion),
             "terrain_data": pack(_terrain_fields(good.terrain) if terrain is None else terrain),
             "misc_data": pack(misc), **(outer_extra or {})}
    path.write_bytes(pickle.dumps(outer, protocol=4))


def _motion(**changes) -> Callable[[Path, Path], None]:
    return lambda path, marker: _sections(path, motion=_fields(_good().motion, **changes))


def _terrain(**changes) -> Callable[[Path, Path], None]:
    return lambda path, marker: _sections(path, terrain=_terrain_fields(_good().terrain, **changes))


def _write(mf: Callable[[], MotionFile]) -> Callable[[Path, Path], None]:
    return lambda path, marker: write_motion_file(path, mf())


def _raw(data: bytes) -> Callable[[Path, Path], None]:
    return lambda path, marker: path.write_bytes(data)


def _with_frame(name: str, row: int, value: float) -> Callable[[Path, Path], None]:
    def write(path, marker):
        arr = getattr(_good().motion, name).copy()
        arr[row, -1] = value
        _sections(path, motion=_fields(_good().motion, **{name: arr}))
    return write


def _truncated(path: Path, marker: Path) -> None:
    full = parc_dumps({"motion_data": parc_dumps(_fields(_good().motion)), "terrain_data": None, "misc_data": None})
    path.write_bytes(full[: len(full) // 2])


def _torch_zip(path: Path, marker: Path) -> None:
    """A zip archive laid out as torch.save writes one (a model.pt), renamed .pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weight": [0.0] * 8}))
        z.writestr("archive/version", "3\n")


def _terrain_with_cell(value: float) -> Callable[[Path, Path], None]:
    def write(path, marker):
        hf = _good().terrain.hf.copy()
        hf[2, 3] = value
        _sections(path, terrain=_terrain_fields(_good().terrain, hf=hf, hf_maxmin=None))
    return write


def _big_terrain(path: Path, marker: Path) -> None:
    g = _good()
    write_motion_file(path, replace(g, terrain=Heightfield(np.zeros((60, 60), np.float32), g.terrain.min_point,
                                                           g.terrain.dx)))


def _rough_terrain(path: Path, marker: Path) -> None:
    """40x40 cells around the path, alternating 0 and 5 cm: every reachable cell is a box of its own."""
    g = _good()
    hf = (np.indices((40, 40)).sum(axis=0) % 2 * 0.05).astype(np.float32)
    write_motion_file(path, replace(g, terrain=Heightfield(hf, g.terrain.min_point - 16 * g.terrain.dx, g.terrain.dx)))


def _motion_fps(fps) -> Callable[[], MotionFile]:
    return lambda: replace(_good(), motion=replace(_good().motion, fps=fps))


def _terrain_dx(dx) -> Callable[[], MotionFile]:
    g = _good()
    return lambda: replace(g, terrain=replace(g.terrain, dx=dx))


def _deep_misc(path: Path, marker: Path) -> None:
    deep: list = []
    for _ in range(150):
        deep = [deep]
    g = _good("wave_flat")
    _sections(path, motion=_fields(g.motion), terrain=_terrain_fields(g.terrain), misc={"deep": deep})


def _fifo(path: Path, marker: Path) -> None:
    os.mkfifo(path)


def _sparse(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(10**9)  # 1 GB that takes no disk space


def _object_array(path: Path, marker: Path) -> None:
    state = (1, (10**9,), np.dtype(object), False, [0.0] * 3)
    _sections(path, motion=pickle.dumps(_fields(_good().motion, root_pos=_Call(_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                                                               state)), protocol=4))


def _hostile(**arrays) -> Callable[[Path, Path], None]:
    return lambda path, marker: _sections(path, motion=pickle.dumps(_fields(_good().motion, **arrays), protocol=4))


def _self_list() -> list:
    loop: list = []
    loop.append(loop)
    return loop


_Q = np.array([0, 0, 0, 1], np.float32).tobytes()
_ZIP = b"PK\x03\x04"

CORPUS: list[Case] = [
    # The good motions beside the bad ones: each must be recorded and merged.
    Case("good", "good", "a/good.pkl", "the demo's stand_flat", "", _write(_good), valid=True),
    Case("good_wave", "good", "a/good_wave.pkl", "wave_flat whose misc_data nests 150 lists deep",
         "misc_data dropped (nested deeper than 100 levels", _deep_misc, valid=True),
    Case("long_name", "1: names", f"a/{LONG_NAME}.pkl", "a name of 250 characters (recorded as a shortened name "
         "with a hash: `<name>_rec.pkl` would not fit in 255 bytes)", "", _write(_good), valid=True),
    Case("shell_name", "1: names", "a/ünï 'q' \"$(touch PWNED)\".pkl", "quotes, `$(...)`, spaces and non-ASCII "
         "letters in the name (never run by a shell)", "", _write(_good), valid=True),
    Case("dx_float32", "2: cell sizes", "a/dx_float32.pkl", "dx as PARC stores it (float32 0.4000000059604645) "
         "beside the demo's 0.4: the same size", "", _write(_terrain_dx(float(np.float32(0.4))))
         , valid=True),
    Case("fps31", "5: durations", "a/fps31.pkl", "31 fps: its end falls between two control steps "
         "(recorded up to the last step within it, weight at most its source's)", "", _write(_motion_fps(31)),
         valid=True),
    # Issue 2's classes.
    Case("missing", "issue 2", "b/missing.pkl", "listed, never written", "file not found", lambda p, m: None),
    Case("truncated", "issue 2", "b/truncated.pkl", "the first half of a motion file", "truncated", _truncated),
    Case("malicious", "issue 2", "b/malicious.pkl", "a pickle that calls os.system",
         "refused to unpickle global", lambda p, m: p.write_bytes(pickle.dumps(_Exploit(m)))),
    Case("malicious_inner", "issue 2", "b/malicious_inner.pkl", "motion_data calls os.system",
         "refused to unpickle global", lambda p, m: _sections(p, motion=pickle.dumps(_Exploit(m)))),
    Case("nan_frame", "issue 2", "b/nan_frame.pkl", "NaN in root_pos at frame 7",
         "root_pos is not finite at frame 7", _with_frame("root_pos", 7, np.nan)),
    Case("bad_shape", "issue 2", "b/bad_shape.pkl", "joint_rot with 13 joints", "joint_rot has shape",
         _motion(joint_rot=_good().motion.joint_rot[:, :13])),
    Case("one_frame", "issue 2", "b/one_frame.pkl", "a single frame", "too few frames",
         lambda p, m: _sections(p, motion={k: (v[:1] if isinstance(v, np.ndarray) else v)
                                           for k, v in _fields(_good().motion).items()})),
    Case("no_terrain", "issue 2", "b/no_terrain.pkl", "terrain_data None", "no terrain_data",
         lambda p, m: p.write_bytes(pickle.dumps({"motion_data": pickle.dumps(_fields(_good().motion)),
                                                  "terrain_data": None, "misc_data": None}))),
    Case("good_dup", "issue 2", "c/good.pkl", "the same name as a/good.pkl in another folder",
         "duplicate motion name 'good' (first listed as", _write(lambda: _good("stand_step_top"))),
    # 1: whatever a file, its name or its content holds, one invalid row with a one-line error.
    Case("torch_zip", "1: content", "names/torch_zip.pkl", "a zip archive as torch.save writes it, renamed .pkl",
         "corrupt or truncated pickle", _torch_zip),
    Case("fps_text", "1: content", "names/fps_text.pkl", "fps a string holding line breaks",
         "fps must be an integer from 1 to 10000, got '30\\n\\nrm -rf /'", _motion(fps="30\n\nrm -rf /")),
    Case("tab_name", "1: names", "names/tab\tname.pkl", "a tab in the name", "its path holds a tab, a line break",
         _write(_good)),
    Case("newline_name", "1: names", "names/newline\nname.pkl", "a line break in the name",
         "its path holds a tab, a line break", _write(_good)),
    Case("cr_name", "1: names", "names/cr\rname.pkl", "a carriage return in the name",
         "its path holds a tab, a line break", _write(_good)),
    Case("nul_name", "1: names", "names/nul\x00name.pkl", "a NUL character in the dataset's `file:` (no such file "
         "can exist)", "its path holds a tab, a line break", lambda p, m: None),
    Case("brace_name", "1: names", "names/br{ace}s.pkl", "`{ace}` in the name (Snakemake reads it as a wildcard)",
         "which Snakemake reads as a wildcard", _write(_good)),
    Case("wildcard_name", "1: names", "names/{it}.pkl", "`{it}` in the name (Snakemake would fill in the "
         "iteration's name)", "which Snakemake reads as a wildcard", _write(_good)),
    Case("fps_huge_int", "1: content", "names/fps_huge_int.pkl", "fps the Python int 10**30",
         "fps must be an integer from 1 to 10000, got 1000000000000000000000000000000", _motion(fps=10**30)),
    Case("fps_5000_digits", "1: content", "names/fps_5000_digits.pkl", "fps an int of 5000 digits (its repr "
         "raises)", "got an integer of 16610 bits", _motion(fps=10**5000)),
    Case("loop_mode_array", "1: content", "names/loop_mode_array.pkl", "loop_mode an array",
         "loop_mode must be CLAMP or WRAP, got array(", _motion(loop_mode=np.zeros(3))),
    Case("cell_minus_1e30", "1: values record relies on", "values/cell_minus_1e30.pkl",
         "a terrain cell at -1e30 m", "terrain_data.hf is -1e+30 at cell (2, 3)", _terrain_with_cell(-1e30)),
    Case("root_far", "1: values record relies on", "values/root_far.pkl", "root_pos 100 km from the origin",
         "motion_data.root_pos is 100000 at frame 5", _with_frame("root_pos", 5, 1e5)),
    Case("dx_tiny", "1: values record relies on", "values/dx_tiny.pkl", "dx 1e-30 m",
         "terrain_data.dx must be a number from 0.001", _terrain(dx=1e-30)),
    Case("far_corner", "1: values record relies on", "values/far_corner.pkl", "a terrain whose far corner is "
         "20 km out (dx 3000 m)", "the terrain's far corner", _terrain(dx=3000.0)),
    # 2: cell sizes compare as PARC writes them (float32), in index as in record.
    Case("dx_odd", "2: cell sizes", "values/dx_odd.pkl", "dx 0.4000004: equal to 0.4 to 6 decimals, not in "
         "float32", "terrain cell size dx 0.4000004 differs from the dataset's 0.4", _write(_terrain_dx(0.4000004))),
    # 3: a small file cannot make the reader allocate much, nor stand for a long or large motion.
    Case("claims_6gb", "3: memory", "memory/claims_6gb.pkl", "root_pos asks numpy's _reconstruct for a 6 GB "
         "array (a 22 KB file)", "claims an array of 6000000000 bytes", _hostile(root_pos=_Call(
             _RECONSTRUCT, (np.ndarray, (6 * 10**9,), b"b")))),
    Case("stride0_46h", "3: memory", "memory/stride0_46h.pkl", "numpy.ndarray called with zero strides: "
         "5 million frames from 16 bytes (a 46-hour motion of 1.4 KB)", "calls numpy.ndarray(...) directly",
         _hostile(root_rot=_Call(np.ndarray, ((5 * 10**6, 4), "f4", _Q, 0, (0, 4))))),
    Case("object_array", "3: memory", "memory/object_array.pkl", "an object array of 10**9 elements from 3",
         "object array", _object_array),
    Case("binbytes8", "3: memory", "memory/binbytes8.pkl", "a BINBYTES8 opcode claiming 60 TB",
         "corrupt or truncated pickle", _raw(b"\x80\x04\x8e" + struct.pack("<Q", 6 * 10**13) + b"abc.")),
    Case("memo_index", "3: memory", "memory/memo_index.pkl", "a memo index of 2**31 (the C unpickler "
         "allocates a table that long)", "not a PARC motion file",
         _raw(b"\x80\x04N" + b"r" + struct.pack("<I", 2**31) + b".")),
    Case("repeated_rows", "3: memory", "memory/repeated_rows.pkl", "root_pos a list repeating one row by "
         "reference 50000 times", "root_pos has 50000 frames, more than limits.max_frames (400)",
         _motion(root_pos=[[0.0, 0.0, 0.9]] * 50_000)),
    Case("repeated_array", "3: memory", "memory/repeated_array.pkl", "root_pos a list naming one 200 KB array "
         "10000 times (2 GB as float32)", "root_pos has shape (10000, 50000), expected [n, 3]",
         _motion(root_pos=[np.zeros(50_000, np.float32)] * 10_000)),
    Case("self_list", "1: content", "memory/self_list.pkl", "root_pos a list that holds itself",
         "root_pos has shape (1, 1, 1), expected [n, 3]", _motion(root_pos=_self_list())),
    Case("long_duration", "3: time", "memory/long_duration.pkl", "73 frames at 1 fps", "motion lasts 72 s, more "
         "than record.max_duration_s (10)", _write(_motion_fps(1))),
    Case("big_terrain", "3: memory", "memory/big_terrain.pkl", "a 60x60 terrain",
         "hf has 3600 cells, more than limits.max_terrain_cells (2000)", _big_terrain),
    Case("rough_terrain", "3: time", "memory/rough_terrain.pkl", "a rough 40x40 terrain (every reachable cell "
         "a box)", "collision boxes, more than limits.max_collision_boxes (100)", _rough_terrain),
    Case("big_misc", "3: disk", "memory/big_misc.pkl", "80 KB of misc_data (a recording carries it along)",
         "more than limits.max_misc_mb (0.05)",
         _write(lambda: replace(_good(), misc={"blob": np.zeros(20_000, np.float32)}))),
    Case("sparse_1gb", "3: memory", "memory/sparse_1gb.pkl", "a 1 GB sparse file", "larger than limits.max_file_mb "
         "(0.5 MB)", _sparse),
    Case("fifo", "3: time", "memory/fifo.pkl", "a FIFO (reading it waits for a writer for ever)",
         "not a regular file (a FIFO)", _fifo),
    Case("dev_zero", "3: memory", "memory/dev_zero.pkl", "a link to /dev/zero (reads without end)",
         "not a regular file (a character device)", lambda p, m: os.symlink("/dev/zero", p)),
    Case("directory", "3: time", "memory/directory.pkl", "a directory", "not a regular file (a directory)",
         lambda p, m: p.mkdir()),
    # 5: what cannot be physical is not written.
    Case("shorter_than_a_step", "5: durations", "physical/shorter_than_a_step.pkl", "2 frames at 1000 fps (1 ms)",
         "less than one control step", _write(lambda: replace(_good(), motion=_two_frames(1000)))),
    Case("complex", "5: values", "physical/complex.pkl", "root_pos complex-valued",
         "root_pos is complex-valued", _motion(root_pos=_good().motion.root_pos.astype(np.complex64))),
]


def _two_frames(fps: int) -> MotionData:
    m = _good().motion
    return MotionData(m.root_pos[:2], m.root_rot[:2], m.joint_rot[:2], m.body_contacts[:2], fps)


def build_corpus(root: Path, marker: Path) -> dict[str, Path]:
    """Every case's file below `root`, and root/dataset.yaml listing them all; key -> path."""
    files = {}
    for case in CORPUS:
        path = root / case.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        case.write(path, marker)
        files[case.key] = path
    write_dataset(root / "dataset.yaml", [(c.rel, 1.0) for c in CORPUS])
    return files


def docs_table() -> str:
    """The table of docs/bad_inputs.md."""
    def cell(text, most=None):
        text = one_line(text, None).replace("|", "\\|")
        return text if most is None or len(text) <= most else f"{text[:most // 2]}…{text[-12:]}"
    lines = ["| class | input | file | expected in the manifest |", "| --- | --- | --- | --- |"]
    for c in CORPUS:
        outcome = ("recorded" + (f"; warning: `{cell(c.expect)}`" if c.expect else "")) if c.valid else \
            f"invalid: `{cell(c.expect)}`"
        lines.append(f"| {c.cls} | {cell(c.input)} | `{cell(c.rel, 60)}` | {outcome} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(docs_table(), end="")
