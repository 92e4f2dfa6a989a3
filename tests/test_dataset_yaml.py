from pathlib import Path

import pytest
import yaml

from physrec.formats.dataset_yaml import (
    DatasetEntry,
    DatasetError,
    motion_class,
    motion_name,
    read_dataset,
    write_dataset,
)


def _yaml(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def test_read_resolves_paths_weights_and_extra(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "jump").mkdir(parents=True)
    (root / "jump" / "a.pkl").touch()
    cwd = tmp_path / "cwd"
    (cwd / "other").mkdir(parents=True)
    (cwd / "other" / "b.pkl").touch()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DATA_DIR", str(root))
    ds = _yaml(root / "ds.yaml", {"motions": [
        {"file": "jump/a.pkl", "weight": 2.5, "terrain": "x"},
        {"file": "other/b.pkl"},
        {"file": "$DATA_DIR/jump/a.pkl", "weight": 0},
        {"file": "${DATA_DIR}/missing.pkl", "weight": 1},
        {"file": "gone/c.pkl", "weight": 3},
    ]})
    entries = read_dataset(ds)
    assert [e.path for e in entries] == [
        root / "jump" / "a.pkl",  # YAML-relative
        cwd / "other" / "b.pkl",  # falls back to the working directory
        root / "jump" / "a.pkl",
        root / "missing.pkl",
        root / "gone" / "c.pkl",  # missing everywhere: YAML-relative, for the indexer to report
    ]
    assert [e.weight for e in entries] == [2.5, 1.0, 0.0, 1.0, 3.0]
    assert entries[0].file == "jump/a.pkl" and entries[0].extra == {"terrain": "x"}
    assert entries[2].file == "$DATA_DIR/jump/a.pkl"
    assert all(isinstance(e.weight, float) and e.path.is_absolute() for e in entries)


def test_unset_variable_names_it_and_the_entry(tmp_path, monkeypatch):
    monkeypatch.delenv("PHYSREC_NOT_SET", raising=False)
    ds = _yaml(tmp_path / "ds.yml", {"motions": [{"file": "a.pkl"}, {"file": "$PHYSREC_NOT_SET/b.pkl"}]})
    with pytest.raises(DatasetError, match=r"ds\.yml: motions\[1\]: environment variable \$PHYSREC_NOT_SET"):
        read_dataset(ds)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"motions": [{"file": "a.pkl", "weight": -1}]}, r"motions\[0\] \(a.pkl\): weight must be"),
        ({"motions": [{"file": "a.pkl", "weight": "heavy"}]}, "weight must be"),
        ({"motions": [{"file": "a.pkl", "weight": True}]}, "weight must be"),
        ({"motions": [{"weight": 1}]}, r"motions\[0\] needs a non-empty 'file'"),
        ({"motions": ["a.pkl"]}, r"motions\[0\] must be a mapping"),
        ({"files": []}, "expected a mapping with a 'motions' list"),
        ([1, 2], "expected a mapping with a 'motions' list"),
        ("motions: [unclosed", "invalid YAML"),
    ],
)
def test_invalid_datasets(tmp_path, doc, message):
    ds = _yaml(tmp_path / "bad.yaml", doc)
    with pytest.raises(DatasetError, match=f"^{ds}: .*{message}"):
        read_dataset(ds)


def test_missing_yaml(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_dataset(tmp_path / "none.yaml")


def test_single_motion_path(tmp_path):
    (entry,) = read_dataset(tmp_path / "walk.pkl")
    assert entry == DatasetEntry(file=str(tmp_path / "walk.pkl"), path=tmp_path / "walk.pkl", weight=1.0)


def test_write_round_trip_full_precision(tmp_path):
    ds = tmp_path / "out" / "ds.yaml"
    weights = [0.1 + 0.2, 1e-05, 3.0, 0.0, 1 / 3]
    write_dataset(ds, [(f"m{i}.pkl", w) for i, w in enumerate(weights)])
    expected = [{"file": f"m{i}.pkl", "weight": w} for i, w in enumerate(weights)]
    assert yaml.safe_load(ds.read_text()) == {"motions": expected}
    assert [e.weight for e in read_dataset(ds)] == weights
    first = ds.read_bytes()
    write_dataset(ds, read_dataset(ds))  # entries keep the file as written
    assert ds.read_bytes() == first


def test_write_keeps_extra_and_rejects_bad_weight(tmp_path):
    ds = tmp_path / "ds.yaml"
    entry = DatasetEntry(file="a.pkl", path=tmp_path / "a.pkl", weight=2.0, extra={"terrain": "t"})
    write_dataset(ds, [entry])
    assert yaml.safe_load(ds.read_text()) == {"motions": [{"file": "a.pkl", "weight": 2.0, "terrain": "t"}]}
    with pytest.raises(DatasetError, match="weight must be"):
        write_dataset(ds, [("a.pkl", float("nan"))])


def test_motion_name_and_class(tmp_path):
    assert motion_name("/x/y/TEASER_TERRAIN.pkl") == "TEASER_TERRAIN"
    assert motion_name("a.b.pkl") == "a.b"
    root = tmp_path / "data"
    assert motion_class(root / "parkour" / "sub" / "m.pkl", root) == "parkour"
    assert motion_class(root / "m.pkl", root) == ""
    assert motion_class(tmp_path / "elsewhere" / "m.pkl", root) == ""
