"""`physrec bench`: one entry with subcommands, plain help, and what each runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from physrec.bench import SUBCOMMANDS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "parc_samples"


def _physrec(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "physrec", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("sub", [None, *SUBCOMMANDS])
def test_bench_help_names_its_command_and_has_no_markup(sub):
    args = ["bench"] + ([sub] if sub else []) + ["--help"]
    done = _physrec(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: physrec bench{' ' + sub if sub else ''} "), done.stdout[:200]
    for markup in ("``", ":func:", ":class:", "`"):
        assert markup not in done.stdout, (markup, done.stdout)


def test_sampling_runs_only_the_motions_it_is_given():
    from physrec.bench.sampling import DEMO_FAILING, load_motions
    teaser = SHARED / "TEASER_TERRAIN.pkl"
    if not teaser.is_file():
        pytest.skip(f"needs PARC's sample {teaser}")
    assert [m.name for m in load_motions([teaser])] == ["TEASER_TERRAIN"]
    assert [m.name for m in load_motions([])] == list(DEMO_FAILING)


def test_throughput_measures_recorder_and_raw_in_one_run(tmp_path):
    done = _physrec("bench", "throughput", "--envs", "2", "--repeats", "1", "--threads", "1",
                    "--json", str(tmp_path / "f.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio recorder/raw" in done.stdout
    (r,) = json.loads((tmp_path / "f.json").read_text())["results"]
    assert r["envs"] == 2 and 0 < r["recorder_over_raw"] < 2


def test_no_subcommand_lists_them():
    done = _physrec("bench")
    assert done.returncode == 2 and "SUBCOMMAND" in done.stderr
