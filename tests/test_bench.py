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


def test_iteration_records_a_batch_end_to_end_and_projects_an_iteration(tmp_path):
    """Two copies of PARC's shortest sample through the record job's own code at 1 thread:
    the outputs are written, the shares add up, and the projection follows the measured rate."""
    sfu = SHARED / "sfu.pkl"
    if not sfu.is_file():
        pytest.skip(f"needs PARC's sample {sfu}")
    done = _physrec("bench", "iteration", "--files", str(sfu), "--copies", "2", "--threads", "1",
                    "--dir", str(tmp_path / "it"), "--json", str(tmp_path / "f.json"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (r,) = json.loads((tmp_path / "f.json").read_text())["results"]
    assert (tmp_path / "it" / "record-1" / "rollouts.h5").is_file()
    assert r["motions"] == 2 and r["attempts"] >= 2 and abs(sum(r["shares"].values()) - 1) < 1e-9
    assert r["iteration_projection_s"] == pytest.approx(20000 / r["motion_s"] * (r["wall_s"] + r["startup_s"]))
    assert "a 2000 x 10 s iteration" in done.stdout


def test_iteration_with_whole_motions_simulates_every_motion_to_its_end(tmp_path):
    """--whole-motions: terminations that cannot fire, so a random-weight policy, which falls within
    a second of every start, still simulates both copies of civilization (8.4 s) whole, once each."""
    civ = SHARED / "civilization.pkl"
    if not civ.is_file():
        pytest.skip(f"needs PARC's sample {civ}")
    done = _physrec("bench", "iteration", "--files", str(civ), "--copies", "2", "--threads", "1",
                    "--whole-motions", "--dir", str(tmp_path / "it"), "--json", str(tmp_path / "f.json"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads((tmp_path / "f.json").read_text())
    (r,) = out["results"]
    assert out["whole_motions"] and r["attempts"] == 2 and r["succeeded"] == 2
    assert r["simulated_motion_s"] == pytest.approx(r["motion_s"], abs=0.05)
