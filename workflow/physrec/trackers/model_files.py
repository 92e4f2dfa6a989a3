"""Model files (PARC checkpoints, torch.export programs) read without running their code and
within a documented size, before torch sees them.

torch's readers trust a zip archive's declared sizes (a 3 MB archive can declare gigabytes),
block on a FIFO and read /dev/zero for ever, so physrec reads the bytes itself: a regular
file of at most MAX_MODEL_MB, a zip archive whose members decompress to at most MAX_MODEL_MB
together, and tensors only through torch's weights-only unpickler.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

from physrec.formats.files import UnsafeFileError, read_regular_file
from physrec.formats.safe_zip import UnsafeZipError, open_checked_zip
from physrec.trackers.base import TrackerError

# A model file, and everything its archive decompresses to: PARC's 1312-2048-1024-512-28
# actor and critic take about 45 MB, so this leaves room for policies 20x larger.
MAX_MODEL_MB = 1024
MAX_MODEL_BYTES = MAX_MODEL_MB * 1_000_000
LIMIT_NAME = f"physrec's limit for model files (MAX_MODEL_MB, {MAX_MODEL_MB} MB)"


def first_line(e: BaseException) -> str:
    """The gist of an exception: its first sentence (torch's messages run on for lines)."""
    text = str(e).strip().splitlines()
    return text[0].split(". ")[0] if text else type(e).__name__


def read_model(path: Path) -> bytes:
    """The bytes of a model file: a regular file within the size limit."""
    try:
        return read_regular_file(path, MAX_MODEL_BYTES, LIMIT_NAME)
    except UnsafeFileError as e:
        raise TrackerError(str(e)) from None


def checked_zip(data: bytes, what: str) -> zipfile.ZipFile:
    """`data` as a zip archive whose declared sizes fit the limit (nothing is decompressed yet)."""
    try:
        return open_checked_zip(data, what, MAX_MODEL_BYTES, LIMIT_NAME)
    except UnsafeZipError as e:
        raise TrackerError(str(e)) from None


_REFUSED = "refused: it holds pickled objects other than tensors, and loading them could run code"
_CALLING_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE"}


def _pickle_calls_code(data: bytes) -> bool:
    """Whether bare pickle bytes import or call something (garbage is not a pickle at all)."""
    try:
        return any(op.name in _CALLING_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:
        return False


def load_tensors(data: bytes, device: str, what: str) -> object:
    """Tensors and plain containers from a torch.save archive (zip format, PyTorch >= 1.6), never code.

    The legacy (non-zip) format is refused: its storages are allocated at the sizes its pickle
    declares before any byte of them is read, so a small file could ask for any amount of memory.
    """
    if not zipfile.is_zipfile(io.BytesIO(data)):
        if _pickle_calls_code(data):
            raise TrackerError(f"{what}: {_REFUSED}")
        raise TrackerError(f"{what}: not a readable PyTorch file: not a zip archive (truncated, or the legacy "
                           "format from before PyTorch 1.6, which is not read)")
    checked_zip(data, what)
    try:
        with warnings.catch_warnings():  # PARC saves with pickle protocol 4, which torch warns about
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # a global outside torch's allow-list
            raise TrackerError(f"{what}: {_REFUSED}") from None
        raise TrackerError(f"{what}: not a readable PyTorch file (truncated or corrupt?): {first_line(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise TrackerError(f"{what}: not a readable PyTorch file (truncated or corrupt?): {first_line(e)}") from None
