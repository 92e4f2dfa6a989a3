"""Restricted unpickling for PARC motion files, and numpy-1-compatible pickling for writing them.

PARC stores motions as pickles. ``pickle.load`` on an untrusted file runs arbitrary code, so
loading admits only the few globals that numpy arrays, dtypes and scalars need, and refuses
everything else before importing or calling it. Nor may a small file make the loader allocate
much: every array is checked against the size of the pickle before numpy allocates it.
"""

from __future__ import annotations

import _codecs
import importlib
import io
import math
import pickle
from typing import Any, BinaryIO

import numpy as np

from physrec.formats.text import brief, describe

# numpy 2 renamed numpy.core to numpy._core; numpy.core is a shim that warns when imported.
_CORE = "numpy._core" if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else "numpy.core"
_multiarray = importlib.import_module(f"{_CORE}.multiarray")
_numeric = importlib.import_module(f"{_CORE}.numeric")

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


class _Refused(Exception):
    """Raised by the callables a pickle may use; safe_loads turns it into UnsafePickleError."""


class _ArrayClass:
    """What the name numpy.ndarray loads as. numpy's own pickles use it only as the first argument
    of _reconstruct; called directly, ndarray(shape, dtype, buffer, offset, strides) could claim
    any size, or repeat a few bytes without end through zero strides."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("calls numpy.ndarray(...) directly (numpy's own pickles never do)")


_ARRAY_CLASS = _ArrayClass()


def _dtype(*args: Any, **kwargs: Any) -> np.dtype:
    """numpy.dtype, without object dtypes: an object array's pickle names its length, and numpy
    allocates that many pointers before it reads a single element."""
    d = np.dtype(*args, **kwargs)
    _check_dtype(d)
    return d


def _check_dtype(d: np.dtype) -> None:
    if d.hasobject:
        raise _Refused(f"holds an object array (dtype {d}); only numeric arrays are allowed")


def _latin1(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """_codecs.encode as numpy 1's protocol-2 pickles use it (the text of a bytes object, to latin1), only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("calls _codecs.encode other than as numpy does (text to latin1)")
    return _codecs.encode(text, "latin1")


def _nbytes(shape: Any, dtype: np.dtype) -> int:
    """Bytes of an array of `shape` and `dtype`, in Python integers (no overflow)."""
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Refused(f"gives an array the shape {brief(shape)}")
    return math.prod(shape) * dtype.itemsize


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: BUILD can be checked
    """Admits the globals numpy needs for arrays, dtypes and scalars, and checks every array before
    numpy allocates it: no array may claim more bytes than the pickle holds (numpy's own pickles
    carry every byte of their arrays). The pure-Python unpickler also never allocates what a
    length field claims before reading it, nor a memo table as long as the largest index named."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._budget = len(data)
        self._globals: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): _ARRAY_CLASS,
            ("numpy", "dtype"): _dtype,
            ("_codecs", "encode"): _latin1,
        }
        for prefix in ("numpy.core", "numpy._core"):
            self._globals[(f"{prefix}.multiarray", "_reconstruct")] = self._reconstruct
            self._globals[(f"{prefix}.multiarray", "scalar")] = _multiarray.scalar
            self._globals[(f"{prefix}.numeric", "_frombuffer")] = _numeric._frombuffer

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise _Refused(f"refused to unpickle global '{module}.{name}' "
                           "(only numpy arrays and plain containers are allowed)") from None

    def _check_size(self, nbytes: int) -> None:
        if nbytes > self._budget:
            raise _Refused(f"claims an array of {nbytes} bytes in a pickle of {self._budget} bytes")

    def _reconstruct(self, cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        if cls is not _ARRAY_CLASS:
            raise _Refused("calls numpy's _reconstruct for something other than an array")
        d = _dtype(dtype)
        self._check_size(_nbytes(shape, d))
        return _multiarray._reconstruct(np.ndarray, shape, d)

    def load_build(self) -> None:
        """An array's state (version, shape, dtype, fortran order, raw bytes) is checked before
        numpy sees it; a dtype's state may not turn it into an object dtype; nothing else has a state."""
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.ndarray):
            if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)):
                raise _Refused("gives an array a state numpy does not write")
            _check_dtype(state[2])
            self._check_size(_nbytes(state[1], state[2]))
            if not isinstance(state[4], (bytes, bytearray)):
                raise _Refused("gives an array's data as something other than bytes")
        elif not isinstance(inst, np.dtype):
            raise _Refused(f"sets the state of a {type(inst).__name__}")
        super().load_build()
        if isinstance(inst, np.dtype):
            _check_dtype(inst)

    dispatch[pickle.BUILD[0]] = load_build


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and plain Python containers.

    ``source`` names where the bytes came from (a path, maybe with a section) for error messages.
    """
    try:
        return _RestrictedUnpickler(data).load()
    except _Refused as e:
        raise UnsafePickleError(source, str(e)) from None
    except Exception as e:  # anything else means the bytes are not a valid pickle of allowed objects
        raise CorruptPickleError(source, f"corrupt or truncated pickle ({describe(e)})") from e


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


def parc_dump(obj: Any, file: BinaryIO) -> None:
    """Protocol-4 pickle that numpy 1.x can load (``numpy.core.*`` names), deterministic for
    equal input, written to `file` (a batch's terrain file is a gigabyte: no copy in memory)."""
    _ParcPickler(file, protocol=4).dump(obj)


def parc_dumps(obj: Any) -> bytes:
    """parc_dump's bytes."""
    buf = io.BytesIO()
    parc_dump(obj, buf)
    return buf.getvalue()
