import os
import pickle
import pickletools
import subprocess
import warnings

import numpy as np
import pytest

from physrec.formats.safe_pickle import CorruptPickleError, UnsafePickleError, parc_dumps, safe_loads


class _Exploit:
    """Pickles as a call of ``func(*args)``: what a malicious motion file would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_command(marker):
    return f"touch {marker}"


@pytest.mark.parametrize(
    "make_payload, refused",
    [
        (lambda m: _Exploit(os.system, _marker_command(m)), f"{os.system.__module__}.system"),
        (lambda m: _Exploit(eval, f"open({str(m)!r}, 'w').close()"), "builtins.eval"),
        (lambda m: _Exploit(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
    ],
)
def test_malicious_globals_are_refused_without_side_effect(tmp_path, make_payload, refused):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"root_pos": make_payload(marker)}, protocol=4)
    with pytest.raises(UnsafePickleError, match=f"evil.pkl: refused to unpickle global '{refused}'"):
        safe_loads(data, "evil.pkl")
    assert not marker.exists()


def test_control_payload_really_runs_with_plain_pickle(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Exploit(eval, f"open({str(marker)!r}, 'w').close()")))
    assert marker.exists()  # so the refusals above prove something


def test_old_protocol_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Exploit(os.system, _marker_command(marker)), protocol=0)
    with pytest.raises(UnsafePickleError):
        safe_loads(data, "p0")
    assert not marker.exists()


def test_unsafe_error_is_a_value_error():
    assert issubclass(UnsafePickleError, ValueError) and issubclass(CorruptPickleError, ValueError)


@pytest.mark.parametrize("data", [b"", b"\x80\x04\x95", b"not a pickle at all"])
def test_corrupt_data(data):
    with pytest.raises(CorruptPickleError, match="^src.pkl: corrupt or truncated"):
        safe_loads(data, "src.pkl")


def test_truncated_array_pickle():
    data = parc_dumps({"a": np.arange(100, dtype=np.float32)})
    with pytest.raises(CorruptPickleError, match="half"):
        safe_loads(data[: len(data) // 2], "half")


def _sample_obj():
    return {
        "f32": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
        "i64": np.arange(5, dtype=np.int64),
        "bool": np.array([True, False, True]),
        "scalars": [np.float32(1.5), np.int64(-3), np.float64(2.25), np.bool_(True)],
        "nested": {"list": [1, 2.5, "x", None, (1, 2)], "bytes": b"\x00\xff", "empty": {}},
    }


def test_parc_dumps_round_trip():
    obj = _sample_obj()
    back = safe_loads(parc_dumps(obj), "roundtrip")
    assert list(back) == list(obj)
    for key in ("f32", "i64", "bool"):
        assert back[key].dtype == obj[key].dtype
        np.testing.assert_array_equal(back[key], obj[key])
    for a, b in zip(back["scalars"], obj["scalars"]):
        assert type(a) is type(b) and a == b
    assert back["nested"] == obj["nested"]


def test_parc_dumps_uses_numpy1_names_and_protocol4():
    data = parc_dumps(_sample_obj())
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 4
    strings = [arg for op, arg, _ in ops if isinstance(arg, str)]
    assert "numpy.core.multiarray" in strings
    assert not any("numpy._core" in s for s in strings)
    assert b"numpy._core" not in data


def test_parc_dumps_deterministic():
    assert parc_dumps(_sample_obj()) == parc_dumps(_sample_obj())


def test_no_deprecation_warning_on_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        safe_loads(parc_dumps({"a": np.zeros(3)}), "w")
