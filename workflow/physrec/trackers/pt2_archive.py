"""A torch.export archive (.pt2) rebuilt from what physrec can check, before torch reads any of it.

``torch.export.load`` runs code from an archive in more ways than a check of its members can
follow: it unpickles with ``weights_only=False`` the weights and constants its configs route to
pickle, custom and opaque objects by file-name prefix whatever ``use_pickle`` says, sample inputs
that the restricted loader refused (a fallback), and it loads AOTInductor shared libraries.

So torch never sees the user's file. physrec reads it with Python's zip reader (declared sizes
checked first), maps every member to one of: the graph (``models/model.json``), a raw tensor
payload named by a config entry that physrec validated, or the sample inputs (loaded with the
weights-only unpickler and saved again); anything else refuses the file. torch then loads an
archive physrec wrote with torch's own writer, holding only those members: whatever torch's
loading rules are, every byte it reads is one physrec put there.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.export.pt2_archive import constants as pt2
from torch.export.pt2_archive._package import PT2ArchiveWriter

from physrec.trackers.base import TrackerError
from physrec.trackers.model_files import checked_zip, first_line, load_tensors, read_model

MODEL = "model"  # the program torch.export.save writes and torch.export.load returns
_GRAPH = pt2.MODELS_FILENAME_FORMAT.format(MODEL)
_SAMPLE_INPUTS = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(MODEL)
# config file -> (folder of its payloads, the payload names it may use)
_CONFIGS = {
    pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(MODEL): (pt2.WEIGHTS_DIR,
                                                       re.compile(re.escape(pt2.WEIGHT_FILENAME_PREFIX) + r"\d+")),
    pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(MODEL): (pt2.CONSTANTS_DIR,
                                                         re.compile(re.escape(pt2.TENSOR_CONSTANT_FILENAME_PREFIX)
                                                                    + r"\d+")),
}
# Archive metadata torch's writer makes again; read only to check the format.
_METADATA = {pt2.ARCHIVE_FORMAT_PATH, pt2.ARCHIVE_VERSION_PATH, "byteorder", ".data/version",
             ".data/serialization_id"}
_MAX_METADATA_BYTES = 64
_MAX_DIMS = 16


def _root(names: list[str], what: str) -> str:
    """The one top folder every member of a .pt2 archive sits in."""
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise TrackerError(f"{what}: not a torch.export archive (.pt2): members are not in one top folder")
    return roots.pop() + "/"


def _int(value: Any, what: str) -> int:
    if not (isinstance(value, dict) and set(value) == {"as_int"} and type(value["as_int"]) is int):
        raise TrackerError(f"{what}: expected a concrete integer, got {json.dumps(value)[:80]}")
    return value["as_int"]


def _tensor_meta(meta: Any, what: str) -> dict:
    """A config entry's tensor_meta with only the fields torch reads, each checked."""
    keys = {"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"}
    if not isinstance(meta, dict) or set(meta) != keys:
        raise TrackerError(f"{what}: tensor_meta must have exactly the fields {sorted(keys)}")
    sizes, strides = meta["sizes"], meta["strides"]
    if not (isinstance(sizes, list) and isinstance(strides, list) and len(sizes) == len(strides) <= _MAX_DIMS):
        raise TrackerError(f"{what}: sizes and strides must be lists of the same length (at most {_MAX_DIMS})")
    device = meta["device"]
    if not (isinstance(device, dict) and set(device) <= {"type", "index"} and isinstance(device.get("type"), str)
            and (device.get("index") is None or type(device.get("index")) is int)):
        raise TrackerError(f"{what}: unreadable device {json.dumps(device)[:80]}")
    if type(meta["dtype"]) is not int or type(meta["layout"]) is not int or type(meta["requires_grad"]) is not bool:
        raise TrackerError(f"{what}: dtype and layout must be integers, requires_grad a boolean")
    dims = [_int(s, f"{what} size") for s in sizes]
    steps = [_int(s, f"{what} stride") for s in strides]
    offset = _int(meta["storage_offset"], f"{what} storage_offset")
    if any(d < 0 for d in dims) or any(s < 0 for s in steps) or offset < 0:
        raise TrackerError(f"{what}: negative size, stride or storage offset")
    return {"dtype": meta["dtype"], "sizes": [{"as_int": d} for d in dims], "requires_grad": meta["requires_grad"],
            "device": {"type": device["type"], "index": device.get("index")},
            "strides": [{"as_int": s} for s in steps], "storage_offset": {"as_int": offset}, "layout": meta["layout"]}


def _extent(meta: dict) -> int:
    """Elements of storage the strided tensor spans (0 for an empty one)."""
    dims = [d["as_int"] for d in meta["sizes"]]
    if math.prod(dims) == 0:
        return 0
    return meta["storage_offset"]["as_int"] + 1 + sum((d - 1) * s["as_int"] for d, s in zip(dims, meta["strides"]))


def _config(zf: zipfile.ZipFile, root: str, name: str, what: str) -> tuple[dict, set[str]]:
    """A weights or constants config rebuilt from its checked entries, and the payloads it names."""
    folder, payload_name = _CONFIGS[name]
    label = f"{what} [{name}]"
    try:
        entries = json.loads(zf.read(root + name))["config"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise TrackerError(f"{label}: unreadable ({first_line(e)})") from None
    if not isinstance(entries, dict):
        raise TrackerError(f"{label}: 'config' is not a mapping")
    clean, payloads = {}, set()
    for fqn, entry in entries.items():
        where = f"{label} entry {fqn!r}"
        if not isinstance(entry, dict) or set(entry) != {"path_name", "is_param", "use_pickle", "tensor_meta"}:
            raise TrackerError(f"{where}: not a tensor entry (path_name, is_param, use_pickle, tensor_meta)")
        if entry["use_pickle"] is not False:
            raise TrackerError(f"{where}: a pickled object (use_pickle); physrec loads plain tensors only, "
                               "since unpickling could run code")
        path = entry["path_name"]
        if not (isinstance(path, str) and payload_name.fullmatch(path)):
            raise TrackerError(f"{where}: payload {str(path)[:80]!r} is not a plain tensor payload "
                               f"({payload_name.pattern}); custom and opaque objects are refused")
        if type(entry["is_param"]) is not bool:
            raise TrackerError(f"{where}: is_param must be a boolean")
        meta = _tensor_meta(entry["tensor_meta"], where)
        member = root + folder + path
        try:
            nbytes = zf.getinfo(member).file_size
        except KeyError:
            raise TrackerError(f"{where}: payload {folder + path} is missing") from None
        try:
            element = torch.empty((), dtype=_DTYPES[meta["dtype"]]).element_size()
        except KeyError:
            raise TrackerError(f"{where}: dtype {meta['dtype']} is not a plain tensor type") from None
        if _extent(meta) * element > nbytes:
            raise TrackerError(f"{where}: the tensor spans {_extent(meta) * element} bytes, its payload holds "
                               f"{nbytes}")
        clean[fqn] = {"path_name": path, "is_param": entry["is_param"], "use_pickle": False, "tensor_meta": meta}
        payloads.add(folder + path)
    return {"config": clean}, payloads


def _plain_tensors(value: Any) -> bool:
    """Tensors (not subclasses) in tuples, lists and dicts with string keys, and plain scalars."""
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain_tensors(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_tensors(v) for k, v in value.items())
    return value is None or type(value) in (int, float, bool, str)


def _sample_inputs(zf: zipfile.ZipFile, root: str, what: str) -> bytes:
    """The sample inputs, loaded without code and saved again, so torch's loader never needs its
    unrestricted fallback."""
    label = f"{what} [{_SAMPLE_INPUTS}]"
    value = load_tensors(zf.read(root + _SAMPLE_INPUTS), "cpu", label)
    if not (isinstance(value, tuple) and _plain_tensors(value)):
        raise TrackerError(f"{label}: expected (args, kwargs) of plain tensors, found a {type(value).__name__}")
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def _check_metadata(zf: zipfile.ZipFile, root: str, names: set[str], what: str) -> None:
    for name in names & _METADATA:
        if zf.getinfo(root + name).file_size > _MAX_METADATA_BYTES:
            raise TrackerError(f"{what} [{name}]: {zf.getinfo(root + name).file_size} bytes of metadata")
    for name, value in ((pt2.ARCHIVE_FORMAT_PATH, pt2.ARCHIVE_FORMAT_VALUE),
                        (pt2.ARCHIVE_VERSION_PATH, pt2.ARCHIVE_VERSION_VALUE)):
        found = zf.read(root + name) if name in names else b"(none)"
        if found != value.encode():
            raise TrackerError(f"{what}: {name} is {found[:16]!r}, this torch reads {value!r} "
                               f"(save the program again with torch {torch.__version__.split('+')[0]})")


def rebuild_archive(path: Path) -> bytes:
    """The bytes of a .pt2 archive holding only the checked members of `path` (see the module doc)."""
    what = str(path)
    data = read_model(path)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise TrackerError(f"{what}: not a torch.export archive (.pt2): not a zip file")
    with checked_zip(data, what) as zf:
        full = [n for n in zf.namelist() if not n.endswith("/")]
        root = _root(full, what)
        names = {n[len(root):] for n in full}
        if _GRAPH not in names:
            raise TrackerError(f"{what}: not a torch.export archive (.pt2): no {_GRAPH}")
        _check_metadata(zf, root, names, what)
        configs, payloads = {}, set()
        for name in _CONFIGS:
            if name in names:
                configs[name], used = _config(zf, root, name, what)
                payloads |= used
        expected = {_GRAPH, _SAMPLE_INPUTS, *_CONFIGS} | payloads | _METADATA
        unknown = sorted(names - expected)
        if unknown:
            raise TrackerError(f"{what}: refused member {unknown[0]}: physrec loads only the graph, plain tensor "
                               f"payloads and sample inputs{f' ({len(unknown) - 1} more)' if len(unknown) > 1 else ''}")
        missing = sorted({_SAMPLE_INPUTS, *_CONFIGS} - names)
        if missing:
            raise TrackerError(f"{what}: not a torch.export archive (.pt2): no {missing[0]}")
        out = io.BytesIO()
        with PT2ArchiveWriter(out) as writer:
            writer.write_bytes(_GRAPH, zf.read(root + _GRAPH))
            writer.write_bytes(_SAMPLE_INPUTS, _sample_inputs(zf, root, what))
            for name, config in configs.items():
                writer.write_string(name, json.dumps(config))
            for name in sorted(payloads):
                writer.write_bytes(name, zf.read(root + name))
    return out.getvalue()


def _dtype_codes() -> dict[int, torch.dtype]:
    """The schema's dtype codes of plain (non-quantised) tensor types, from torch's own serialiser."""
    from torch._export.serde.serialize import _TORCH_TO_SERIALIZE_DTYPE
    plain = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
             torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128}
    return {int(code.value): dtype for dtype, code in _TORCH_TO_SERIALIZE_DTYPE.items() if dtype in plain}


_DTYPES = _dtype_codes()
