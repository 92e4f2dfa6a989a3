"""Indexing a dataset: every motion becomes a row; bad ones are rows with a clear error, never a crash.

The bad inputs are the corpus of bad_motions.py (docs/bad_inputs.md), under its small limits.
"""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from bad_motions import CORPUS, CORPUS_LIMITS, CORPUS_MAX_DURATION_S, _Exploit, build_corpus, docs_table
from physrec.formats.hashing import sha256_file
from physrec.formats.motion_file import Limits
from physrec.formats.text import one_line
from physrec.stages import index
from physrec.stages.index import MANIFEST_COLUMNS, index_dataset, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
CASES = {c.key: c for c in CORPUS}


def _index(root: Path) -> list[dict]:
    return index_dataset(root / "dataset.yaml", limits=Limits(**CORPUS_LIMITS, max_duration_s=CORPUS_MAX_DURATION_S))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    marker = root / "PWNED"
    files = build_corpus(root / "data", marker)
    return _index(root / "data"), files, marker


def _row_of(rows, key):
    return rows[list(CASES).index(key)]


def test_one_row_per_listed_motion(indexed):
    rows, files, _ = indexed
    assert len(rows) == len(files) == len(CORPUS)
    assert all(r["path"].endswith(one_line(c.rel, None)) for r, c in zip(rows, CORPUS))


def test_good_motions_are_valid(indexed):
    rows, files, _ = indexed
    for key in ("good", "good_wave"):
        r = _row_of(rows, key)
        assert r["valid"] is True and r["error"] is None, r
        assert r["frames"] == 73 and r["fps"] == 30 and r["duration"] == pytest.approx(2.4)
        assert r["sha256"] == sha256_file(files[key])
        assert r["terrain_shape"] == "8x8"
        assert r["class"] == "a"


@pytest.mark.parametrize("key", list(CASES))
def test_each_input_gets_its_row(indexed, key):
    """A bad input: invalid, with a one-line error naming its file and the problem. A good one
    beside them (odd names, float32 cell size, 31 fps, misc that cannot be kept): valid."""
    case, r = CASES[key], _row_of(indexed[0], key)
    assert r["valid"] is case.valid, r
    if case.valid:
        assert r["error"] is None and case.expect in (r["warnings"] or ""), r
        return
    assert case.expect in r["error"], r["error"]
    assert one_line(case.rel, None) in r["error"], r["error"]
    assert r["error"] == one_line(r["error"]), "an error of more than one line"


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
    """Names and errors with tabs and line breaks are written escaped: one row per line, all columns."""
    rows, _, _ = indexed
    write_manifest(tmp_path / "manifest.tsv", rows)
    back = read_manifest(tmp_path / "manifest.tsv")
    assert len((tmp_path / "manifest.tsv").read_bytes().splitlines()) == len(rows) + 1
    assert [list(r) for r in back][0] == MANIFEST_COLUMNS
    assert [r["valid"] for r in back] == ["true" if r["valid"] else "false" for r in rows]
    assert back[list(CASES).index("tab_name")]["name"] == "tab\\tname"


def test_indexing_the_corpus_allocates_little(indexed):
    """Files that claim gigabytes (an array's shape, a zero-stride view, an object array, a length
    field, a sparse file, /dev/zero) are refused before anything that size is allocated, even lazily:
    the indexing process's peak virtual memory stays far below one of them."""
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("needs Linux's /proc/self/status")
    _, files, _ = indexed
    root = files["good"].parents[1]
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); from pathlib import Path; "
            "import test_indexing as t; rows = t._index(Path(sys.argv[1])); "
            "print(sum(not r['valid'] for r in rows), open('/proc/self/status').read().split('VmPeak:')[1].split()[0])")
    r = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    invalid, peak_kb = map(int, r.stdout.split())
    assert invalid == sum(not c.valid for c in CORPUS)
    assert peak_kb < 1_500_000, f"peak virtual memory {peak_kb} kB"


def test_any_exception_of_one_motion_stays_in_its_row(tmp_path, monkeypatch):
    """Whatever reading one motion raises (here a MemoryError), index goes on with the others."""
    files = build_corpus(tmp_path / "data", tmp_path / "PWNED")
    real = index.check_motion

    def failing(path, data, **rules):
        if path == files["good_wave"]:
            raise MemoryError("Unable to allocate 9.31 GiB")
        return real(path, data, **rules)

    monkeypatch.setattr(index, "check_motion", failing)
    rows = _index(tmp_path / "data")
    r = _row_of(rows, "good_wave")
    assert r["valid"] is False and "good_wave.pkl: cannot be read (MemoryError: Unable to allocate 9.31 GiB)" in r["error"]
    assert _row_of(rows, "good")["valid"] is True


def test_the_docs_table_is_the_corpus():
    """docs/bad_inputs.md holds the corpus's table as `python tests/bad_motions.py` prints it."""
    assert docs_table() in (REPO / "docs" / "bad_inputs.md").read_text()


def test_missing_dataset_yaml_raises(tmp_path):
    from physrec.formats.dataset_yaml import DatasetError
    with pytest.raises(DatasetError) as e:
        index_dataset(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)
