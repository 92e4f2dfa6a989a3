import os

import pytest

from physrec.formats.atomic import atomic_output, atomic_write_bytes, atomic_write_text
from physrec.formats.hashing import sha256_bytes, sha256_file, stable_hash


def test_write_bytes_and_text_create_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write_text(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    assert os.listdir(target.parent) == ["out.bin"]


def test_atomic_output_temp_name_and_replace(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the block succeeds
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["result.txt"]


def test_atomic_output_failure_keeps_old_and_cleans_up(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["result.txt"]


def test_atomic_output_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_output(tmp_path / "x.txt"):
            pass
    assert os.listdir(tmp_path) == []


def test_hashes(tmp_path):
    f = tmp_path / "f.bin"
    data = os.urandom(3 << 20)
    f.write_bytes(data)
    assert sha256_file(f) == sha256_bytes(data)
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert stable_hash({"b": 1, "a": [1.5, "x"]}) == stable_hash({"a": [1.5, "x"], "b": 1})
    assert stable_hash({"a": 1}) == sha256_bytes(b'{"a":1}')
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    with pytest.raises(ValueError):
        stable_hash({"a": float("nan")})


def _dead_pid() -> int:
    import subprocess
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_the_next_write_removes_leftovers_of_a_killed_writer(tmp_path):
    """A job killed mid-write leaves `.<name>.<pid>.<token>.tmp`; writing <name> again removes
    it; another file's temporary, and one of the same file that a live process is still writing
    (a concurrent writer), are left alone."""
    target, other = tmp_path / "rollouts.h5", tmp_path / "attempts.tsv"
    leftover = tmp_path / f".rollouts.h5.{_dead_pid()}.deadbeef.tmp"
    leftover.write_bytes(b"half")
    in_progress = tmp_path / f".{other.name}.{_dead_pid()}.cafe0000.tmp"
    in_progress.write_bytes(b"writing")
    concurrent = tmp_path / f".rollouts.h5.{os.getppid()}.feed0000.tmp"
    concurrent.write_bytes(b"still writing")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and not leftover.exists() and in_progress.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([in_progress.name, concurrent.name, "rollouts.h5"])


def test_a_name_near_the_limit_is_written_atomically(tmp_path):
    """The temporary name is cut to fit, so a target name of 255 bytes can still be written, and a
    killed writer's leftover of such a name is still removed by the next write."""
    target = tmp_path / ("m" * 251 + ".pkl")
    leftover = tmp_path / ("." + "m" * 233 + f".{_dead_pid()}.deadbeef.tmp")
    leftover.write_bytes(b"half")
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_fitting_stem_keeps_short_names_and_hashes_long_ones():
    from physrec.formats.text import NAME_MAX, fitting_stem
    assert fitting_stem("stand_flat", "_rec.pkl") == "stand_flat"
    long_a, long_b = "ü" * 124 + "a", "ü" * 124 + "b"  # 249 bytes each, the same start
    a, b = fitting_stem(long_a, "_rec.pkl"), fitting_stem(long_b, "_rec.pkl")
    assert a != b and a == fitting_stem(long_a, "_rec.pkl")  # distinct and deterministic
    assert all(len((s + "_rec.pkl").encode()) <= NAME_MAX and "~" in s for s in (a, b))
    assert a.startswith("ü" * 100) and (a + "_rec.pkl").encode().decode() == a + "_rec.pkl"  # no split character
