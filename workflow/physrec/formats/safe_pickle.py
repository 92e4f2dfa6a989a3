"""Restricted unpickling for PARC motion files, and numpy-1-compatible pickling for writing them.

PARC stores motions as pickles. ``pickle.load`` on an untrusted file runs arbitrary code, so
loading admits only the few globals that numpy arrays, dtypes and scalars need, and refuses
everything else before importing or calling it.
"""

from __future__ import annotations

import _codecs
import importlib
import io
import pickle
from typing import Any

import numpy as np

# numpy 2 renamed numpy.core to numpy._core; numpy.core is a shim that warns when imported.
_CORE = "numpy._core" if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else "numpy.core"
_multiarray = importlib.import_module(f"{_CORE}.multiarray")
_numeric = importlib.import_module(f"{_CORE}.numeric")

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_prefix}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED_GLOBALS[(f"{_prefix}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED_GLOBALS[(f"{_prefix}.numeric", "_frombuffer")] = _numeric._frombuffer

# Spellings that numpy 1.x (PARC: Python 3.8) can import, for the objects numpy 2 calls numpy._core.*.
_LEGACY_NAMES: dict[int, tuple[str, str]] = {
    id(_multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
    id(_multiarray.scalar): ("numpy.core.multiarray", "scalar"),
    id(_numeric._frombuffer): ("numpy.core.numeric", "_frombuffer"),
}


class PickleLoadError(ValueError):
    """A pickle could not be loaded safely; the message starts with its source."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


class UnsafePickleError(PickleLoadError):
    """The pickle names a global outside the allow-list (it might run code)."""


class CorruptPickleError(PickleLoadError):
    """The pickle is truncated or malformed."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                self._source,
                f"refused to unpickle global '{module}.{name}' "
                "(only numpy arrays and plain containers are allowed)",
            ) from None


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and plain Python containers.

    ``source`` names where the bytes came from (a path, maybe with a section) for error messages.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except PickleLoadError:
        raise
    except Exception as e:  # anything else means the bytes are not a valid pickle of allowed objects
        raise CorruptPickleError(source, f"corrupt or truncated pickle ({type(e).__name__}: {e})") from e


class _ParcPickler(pickle._Pickler):  # the pure-Python pickler lets us override save_global
    def save_global(self, obj: Any, name: str | None = None) -> None:
        legacy = _LEGACY_NAMES.get(id(obj))
        if legacy is None:
            super().save_global(obj, name)
            return
        self.save(legacy[0])
        self.save(legacy[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def parc_dumps(obj: Any) -> bytes:
    """Protocol-4 pickle that numpy 1.x can load (``numpy.core.*`` names), deterministic for equal input."""
    buf = io.BytesIO()
    _ParcPickler(buf, protocol=4).dump(obj)
    return buf.getvalue()
