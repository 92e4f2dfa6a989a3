"""Indexing a dataset: every motion becomes a row; bad ones are rows with a clear error, never a crash."""

import pickle

import pytest

from bad_motions import _Exploit, build_bad_dataset
from physrec.formats.hashing import sha256_file
from physrec.stages.index import MANIFEST_COLUMNS, index_dataset, read_manifest, write_manifest


EXPECTED_PROBLEMS = {
    "missing": "not found",
    "truncated": "truncated",
    "malicious": "refused",
    "malicious_inner": "refused",
    "nan_frame": "not finite",
    "bad_shape": "joint_rot",
    "one_frame": "too few frames",
    "no_terrain": "terrain",
    "good_dup": "duplicate",
}


@pytest.fixture()
def indexed(tmp_path):
    marker = tmp_path / "PWNED"
    files = build_bad_dataset(tmp_path / "data", marker)
    rows = index_dataset(tmp_path / "data" / "dataset.yaml")
    return rows, files, marker


def test_one_row_per_listed_motion(indexed):
    rows, files, _ = indexed
    assert len(rows) == len(files)
    assert [r["path"].endswith(str(p.relative_to(p.parents[1]))) for r, p in zip(rows, files.values())] == \
           [True] * len(rows)


def test_good_motions_are_valid(indexed):
    rows, files, _ = indexed
    by_path = {r["path"]: r for r in rows}
    for key in ("good", "good_wave"):
        r = next(r for r in rows if r["path"].endswith(str(files[key].relative_to(files[key].parents[1]))))
        assert r["valid"] is True and r["error"] is None, r
        assert r["frames"] == 73 and r["fps"] == 30 and r["duration"] == pytest.approx(2.4)
        assert r["sha256"] == sha256_file(files[key])
        assert r["terrain_shape"] == "8x8"
        assert r["class"] == "a"
    assert len(by_path) == len(rows)


@pytest.mark.parametrize("key", list(EXPECTED_PROBLEMS))
def test_bad_motion_row_names_file_and_problem(indexed, key):
    rows, files, _ = indexed
    path = files[key]
    rel = str(path.relative_to(path.parents[1]))  # e.g. "b/nan_frame.pkl"
    matches = [r for r in rows if r["path"].endswith(rel)]
    assert len(matches) == 1
    r = matches[0]
    assert r["valid"] is False
    assert r["error"], r
    assert rel in r["error"], r["error"]
    assert EXPECTED_PROBLEMS[key] in r["error"], r["error"]


def test_nan_error_names_the_frame(indexed):
    rows, _, _ = indexed
    r = next(r for r in rows if r["path"].endswith("nan_frame.pkl"))
    assert "root_pos" in r["error"] and "frame 7" in r["error"]


def test_duplicate_keeps_the_first(indexed):
    rows, files, _ = indexed
    dups = [r for r in rows if r["name"] == "good"]
    assert len(dups) == 2
    assert dups[0]["valid"] is True and dups[1]["valid"] is False
    assert "a/good.pkl" in dups[1]["error"]  # says where the first one is


def test_malicious_pickle_never_runs(indexed, tmp_path):
    rows, _, marker = indexed
    assert not marker.exists()
    # The exploit is real: plain pickle would have run it.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Exploit(probe)))
    assert probe.exists()
    assert not marker.exists()


def test_manifest_round_trip(indexed, tmp_path):
    rows, _, _ = indexed
    write_manifest(tmp_path / "manifest.tsv", rows)
    back = read_manifest(tmp_path / "manifest.tsv")
    assert [list(r) for r in back][0] == MANIFEST_COLUMNS
    assert [r["valid"] for r in back] == ["true" if r["valid"] else "false" for r in rows]
    assert all("\n" not in r["error"] and "\t" not in r["error"] for r in back)


def test_missing_dataset_yaml_raises(tmp_path):
    from physrec.formats.dataset_yaml import DatasetError
    with pytest.raises(DatasetError) as e:
        index_dataset(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)
