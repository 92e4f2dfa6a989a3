import numpy as np
import pytest

from physrec.formats.tables import read_tsv, read_tsv_records, write_tsv

COLUMNS = ["name", "frames", "weight", "ok", "note"]


def test_format_and_round_trip(tmp_path):
    path = tmp_path / "sub" / "t.tsv"
    rows = [
        {"name": "m1", "frames": 58, "weight": 0.1 + 0.2, "ok": True, "note": None},
        {"name": "NA", "frames": np.int64(3), "weight": np.float32(0.1), "ok": np.bool_(False), "note": '"q'},
    ]
    write_tsv(path, rows, COLUMNS)
    assert path.read_text() == (
        "name\tframes\tweight\tok\tnote\n"
        "m1\t58\t0.30000000000000004\ttrue\t\n"
        f"NA\t3\t{float(np.float32(0.1))!r}\tfalse\t\"q\n"
    )
    records = read_tsv_records(path)
    assert records[0] == {
        "name": "m1", "frames": "58", "weight": "0.30000000000000004", "ok": "true", "note": ""
    }
    assert records[1]["name"] == "NA" and records[1]["note"] == '"q'  # no NA or quote interpretation
    assert float(records[0]["weight"]) == 0.1 + 0.2
    assert read_tsv(path)[0] == COLUMNS


def test_header_only(tmp_path):
    path = tmp_path / "empty.tsv"
    write_tsv(path, [], COLUMNS)
    columns, rows = read_tsv(path)
    assert columns == COLUMNS and rows == []


def test_deterministic(tmp_path):
    rows = [
        {"name": f"m{i}", "frames": i, "weight": i / 7, "ok": i % 2 == 0, "note": None} for i in range(20)
    ]
    write_tsv(tmp_path / "a.tsv", rows, COLUMNS)
    write_tsv(tmp_path / "b.tsv", rows, COLUMNS)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()


def test_rejects_bad_rows(tmp_path):
    path = tmp_path / "t.tsv"
    with pytest.raises(ValueError, match="row 0 has missing columns"):
        write_tsv(path, [{"name": "x"}], COLUMNS)
    with pytest.raises(TypeError, match="column 'note'"):
        write_tsv(path, [{"name": "a", "frames": 1, "weight": 1.0, "ok": True, "note": [1]}], COLUMNS)
    assert not path.exists()


def test_text_that_would_split_a_table_is_escaped(tmp_path):
    """A file name or error with a tab, a line break of any kind or a lone surrogate (a name that is
    not UTF-8) is written as escapes, so the table stays one row per line with its columns."""
    path = tmp_path / "t.tsv"
    nasty = "a\tb\nc\rd\x0be\u2028f\x00g\udcff"
    write_tsv(path, [{"name": nasty, "frames": 1, "weight": 1.0, "ok": True, "note": "two\nlines"}], COLUMNS)
    assert len(path.read_bytes().splitlines()) == 2
    [row] = read_tsv_records(path)
    assert row["name"] == "a\\tb\\nc\\rd\\x0be\\u2028f\\x00g\\udcff" and row["note"] == "two\\nlines"


def test_a_truncated_or_ragged_table_is_named(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("")
    with pytest.raises(ValueError, match="t.tsv: empty table"):
        read_tsv(path)
    path.write_text("a\tb\n1\t2\n3\n")
    with pytest.raises(ValueError, match="t.tsv: line 3 has 1 fields; the header has 2"):
        read_tsv(path)
