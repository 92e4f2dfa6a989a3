"""Workflow configuration: the shipped config loads; a bad one is refused in one line naming the key."""

from pathlib import Path

import pytest
import yaml

from physrec import config
from physrec.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "config.yaml"


def _write(tmp_path, doc, name="config.yaml"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _base():
    return yaml.safe_load(SHIPPED.read_text())


def _error(tmp_path, doc):
    with pytest.raises(ConfigError) as e:
        config.load(_write(tmp_path, doc))
    msg = str(e.value)
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    assert msg.strip() == msg
    return msg


def test_shipped_config_loads():
    cfg = config.load(SHIPPED)
    assert [it["name"] for it in cfg["iterations"]] == ["iter0"]
    assert cfg["iterations"][0]["dataset"] == "builtin:demo"
    assert cfg["record"]["control_hz"] == 30 and cfg["record"]["physics_hz"] == 120
    # Defaults are filled in (PARC's values).
    term = cfg["record"]["termination"]
    assert term["body_offset_limits_m"] == [0.7, 1.0, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 1.0, 1.2, 10.0, 1.0, 1.2, 10.0]
    assert term["root_pos_error_m"] == 0.6 and term["root_rot_error_deg"] == 75
    assert cfg["selection"]["terrain_padding_m"] >= 0
    settings = config.record_settings(cfg["record"])
    assert settings.physics.substeps == 4
    assert settings.termination.root_rot_error == pytest.approx(1.3089969, abs=1e-6)
    assert settings.start_fractions == (0.1, 0.2, 0.3, 0.4, 0.5)


def test_minimal_config_gets_defaults(tmp_path):
    cfg = config.load(_write(tmp_path, {"iterations": [{"name": "a", "dataset": "d.yaml"}]}))
    assert cfg["results_dir"] == "results" and cfg["batch_size"] == "auto" and cfg["seed"] == 0
    assert config.batch_size(cfg) == 64 and config.batch_size({**cfg, "backend": "mujoco_warp"}) == 4096
    assert config.backend_spec(cfg) == {"name": "mujoco", "device": "cpu"}
    assert cfg["iterations"][0]["tracker"] == {"kind": "pd"}
    assert cfg["record"]["threads"] == 0


def test_validate_does_not_modify_its_input():
    raw = {"iterations": [{"name": "a", "dataset": "d.yaml"}]}
    config.validate(raw)
    assert raw == {"iterations": [{"name": "a", "dataset": "d.yaml"}]}


def test_unknown_top_level_key(tmp_path):
    doc = _base()
    doc["batchsize"] = 4
    msg = _error(tmp_path, doc)
    assert "batchsize" in msg
    assert str(tmp_path / "config.yaml") in msg


def test_unknown_nested_key(tmp_path):
    doc = _base()
    doc["record"]["termination"]["root_pos_err"] = 0.5
    msg = _error(tmp_path, doc)
    assert "root_pos_err" in msg and "record.termination" in msg


def test_missing_iterations(tmp_path):
    doc = _base()
    del doc["iterations"]
    assert "iterations" in _error(tmp_path, doc)


def test_iteration_missing_dataset(tmp_path):
    doc = _base()
    doc["iterations"] = [{"name": "iter0"}]
    msg = _error(tmp_path, doc)
    assert "dataset" in msg and "iterations" in msg


@pytest.mark.parametrize("path, value, key", [
    (("batch_size",), "ten", "batch_size"),
    (("seed",), 1.5, "seed"),
    (("record", "physics_hz"), "fast", "record.physics_hz"),
    (("record", "start_fractions"), 0.1, "record.start_fractions"),
    (("selection", "min_duration_s"), [1], "selection.min_duration_s"),
    (("iterations",), {"name": "x"}, "iterations"),
])
def test_wrong_type(tmp_path, path, value, key):
    doc = _base()
    d = doc
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    assert key in _error(tmp_path, doc)


def test_out_of_range_value(tmp_path):
    doc = _base()
    doc["record"]["start_fractions"] = [0.1, 1.5]
    assert "record.start_fractions" in _error(tmp_path, doc)


def test_physics_hz_not_a_multiple_of_control_hz(tmp_path):
    doc = _base()
    doc["record"]["physics_hz"] = 100
    msg = _error(tmp_path, doc)
    assert "record.physics_hz" in msg and "record.control_hz" in msg


def test_duplicate_iteration_names(tmp_path):
    doc = _base()
    doc["iterations"] = [{"name": "a", "dataset": "x.yaml"}, {"name": "a", "dataset": "y.yaml"}]
    msg = _error(tmp_path, doc)
    assert "iterations" in msg and "a" in msg


def test_unknown_tracker_kind(tmp_path):
    doc = _base()
    doc["iterations"][0]["tracker"] = {"kind": "ppo"}
    assert "iterations.0.tracker.kind" in _error(tmp_path, doc)


def test_several_errors_still_one_line(tmp_path):
    doc = _base()
    doc["foo"] = 1
    doc["batch_size"] = "x"
    doc["record"]["bar"] = 2
    msg = _error(tmp_path, doc)
    assert "batch_size: 'x' is not valid" in msg and "'foo' was unexpected" in msg, msg
    assert "'bar' was unexpected" in msg, msg


def test_not_yaml_and_not_a_mapping_and_missing(tmp_path):
    msg = _error(tmp_path, "iterations: [unclosed\n  - : : :\n")
    assert str(tmp_path / "config.yaml") in msg
    assert "mapping" in _error(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(e.value) and "\n" not in str(e.value)


def test_paths_in_the_config_expand_environment_variables(monkeypatch):
    monkeypatch.setenv("PARC_DATA", "/data/parc")
    cfg = config.validate({"iterations": [{"name": "a", "dataset": "$PARC_DATA/iter1/dataset.yaml",
                                           "base_dataset": "${PARC_DATA}/train.yaml"}],
                           "character": "$PARC_DATA/humanoid.xml"})
    assert cfg["iterations"][0]["dataset"] == "/data/parc/iter1/dataset.yaml"
    assert cfg["iterations"][0]["base_dataset"] == "/data/parc/train.yaml"
    assert cfg["character"] == "/data/parc/humanoid.xml"
    monkeypatch.delenv("PARC_DATA")
    with pytest.raises(config.ConfigError, match=r"iterations\.0\.dataset: environment variable \$PARC_DATA is not set"):
        config.validate({"iterations": [{"name": "a", "dataset": "$PARC_DATA/x.yaml"}]})


@pytest.mark.parametrize("tracker, message", [
    ({"kind": "parc"}, "iterations.0.tracker: kind 'parc' needs 'model'"),
    ({"kind": "pd", "model": "m.pt"}, "iterations.0.tracker: kind 'pd' takes no 'model'"),
    ({"kind": "exported", "model": "p.pt2"}, "iterations.0.tracker: kind 'exported' needs 'observation'"),
    ({"kind": "parc", "model": "m.pt", "observation": "parc"}, "kind 'parc' takes no 'observation'"),
    ({"kind": "exported", "model": "p.pt2", "observation": "mine"}, "iterations.0.tracker.observation"),
])
def test_tracker_keys_per_kind(tmp_path, tracker, message):
    doc = _base()
    doc["iterations"][0]["tracker"] = tracker
    assert message in _error(tmp_path, doc)


def test_files_the_config_names_must_exist(tmp_path, capsys):
    from physrec import cli
    doc = _base()
    doc["iterations"][0]["tracker"] = {"kind": "parc", "model": str(tmp_path / "model.pt")}
    path = _write(tmp_path, doc)
    assert cli.main(["check-config", str(path)]) == 1
    assert f"iterations.0.tracker.model: {tmp_path / 'model.pt'}: model file not found" in capsys.readouterr().err
    (tmp_path / "model.pt").write_bytes(b"")
    doc["character"] = str(tmp_path / "humanoid.xml")
    path = _write(tmp_path, doc)
    assert cli.main(["check-config", str(path)]) == 1
    assert f"character: {tmp_path / 'humanoid.xml'}: character file not found" in capsys.readouterr().err
    doc["character"] = "builtin:humanoid"
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 0
    # A dataset the workflow does not write must exist; an earlier iteration's merged one need not yet.
    doc["iterations"][0]["dataset"] = str(tmp_path / "parc.yaml")
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 1
    assert f"iterations.0.dataset: {tmp_path / 'parc.yaml'}: dataset file not found" in capsys.readouterr().err
    doc["iterations"][0]["dataset"] = "builtin:demo"
    doc["iterations"][0]["base_dataset"] = "results/earlier/dataset.yaml"
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 0


@pytest.mark.parametrize("args, message", [
    (["--record", "{}", "--tracker", '{"kind": "pd"}', "--backend", "{"],
     "--backend: not valid JSON (Expecting property name enclosed in double quotes at character 1)"),
    (["--record", '{"termination": {"root_pos_error_m": -1}}', "--tracker", '{"kind": "pd"}'],
     "--record: termination.root_pos_error_m: -1 is less than or equal to the minimum of 0"),
    (["--record", '{"thread": 2}', "--tracker", '{"kind": "pd"}'],
     "--record: (top level): Additional properties are not allowed ('thread' was unexpected)"),
    (["--record", "{}", "--tracker", '{"kind": "parc"}'], "--tracker: kind 'parc' needs 'model'"),
    (["--record", "{}", "--tracker", '{"kind": "pd"}', "--backend", '{"name": "bullet"}'],
     "--backend: name: 'bullet' is not one of ['mujoco', 'mujoco_warp']"),
])
def test_a_stage_answers_bad_arguments_in_one_line(tmp_path, args, message):
    """The JSON a rule passes to `physrec record` is checked as the workflow checks the config."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "physrec", "record", "--plan", str(tmp_path / "plan.tsv"),
                        "--batch", "b0000000000", "--out-dir", str(tmp_path / "out"), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().endswith(message) and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("change, message", [
    (lambda d: d["record"].update(friction=float("nan")), "config.yaml: record.friction: nan is not a finite number"),
    (lambda d: d["record"].update(termination={"root_pos_error_m": float("inf")}),
     "record.termination.root_pos_error_m: inf is not a finite number"),
    (lambda d: d["selection"].update(max_root_pos_error_m=float("inf")),
     "selection.max_root_pos_error_m: inf is not a finite number"),
    (lambda d: d["record"].update(start_fractions=[0.1, float("nan")]),
     "record.start_fractions.1: nan is not a finite number"),
    (lambda d: d.update(results_dir=""), "results_dir: '' names no folder of its own"),
    (lambda d: d.update(results_dir="/"), "results_dir: '/' names no folder of its own"),
    (lambda d: d.update(results_dir="out/{it}"), "results_dir: 'out/{it}' holds '{' or '}', which Snakemake reads"),
    (lambda d: d["iterations"][0].update(dataset="data/{x}.yaml"), "iterations.0.dataset: 'data/{x}.yaml' holds"),
    (lambda d: d["iterations"][0].update(name="builtin_demo"),
     "iterations.0.name: 'builtin_demo' is a name the workflow uses in results_dir itself"),
    (lambda d: d["iterations"][0].update(name="Run_Summary.tsv"), "'Run_Summary.tsv' is a name the workflow uses"),
    (lambda d: d["iterations"][0].update(name="i" * 101), "iterations.0.name: 'iiii"),
])
def test_values_no_job_could_use_are_refused(tmp_path, change, message):
    """NaN passes every bound of a JSON schema; these used to fail only after simulating, or inside
    Snakemake (an empty results_dir wrote under the file system's root)."""
    doc = {**_base(), "record": {}, "selection": {}}
    change(doc)
    assert message in _error(tmp_path, doc)


def test_results_dir_is_normalised(tmp_path):
    assert config.load(_write(tmp_path, {**_base(), "results_dir": "out//runs/"}))["results_dir"] == "out/runs"


def test_check_config_knows_the_character(tmp_path, capsys):
    """What only the character decides is checked with the config, before any job runs."""
    from physrec import cli
    doc = {**_base(), "record": {"termination": {"body_offset_limits_m": [0.7, 1.0, 0.7]}}}
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 1
    assert ("record.termination.body_offset_limits_m has 3 values; the character has 14 non-root bodies"
            in capsys.readouterr().err)
    (tmp_path / "results").write_text("not a folder")
    doc = {**_base(), "results_dir": str(tmp_path / "results")}
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 1
    assert f"results_dir: {tmp_path / 'results'} exists and is not a folder" in capsys.readouterr().err


def test_limit_defaults_are_the_schemas():
    """formats.motion_file.Limits() is what index applies when no config is given: the schema's defaults."""
    from dataclasses import asdict

    from physrec.formats.motion_file import Limits
    cfg = config.validate({"iterations": [{"name": "i", "dataset": "x"}]})
    assert Limits() == config.limits(cfg["limits"], cfg["record"]["max_duration_s"])
    assert set(asdict(Limits())) == set(cfg["limits"]) | {"max_duration_s"}


@pytest.mark.parametrize("where", ["dataset", "base_dataset", "model"])
def test_an_input_inside_a_folder_the_run_writes_is_refused(tmp_path, monkeypatch, capsys, where):
    """A dataset at <data>/iter0/dataset.yaml with results_dir <data> was overwritten by merge."""
    from physrec import cli
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    (data / "iter0").mkdir(parents=True)
    (data / "iter0" / "dataset.yaml").write_text("motions: []\n")
    (data / "iter0" / "model.pt").write_bytes(b"x")
    it = {"name": "iter0", "dataset": "builtin:demo"}
    if where == "model":
        it["tracker"] = {"kind": "parc", "model": str(data / "iter0" / "model.pt")}
    else:
        it[where] = str(data / "iter0" / "dataset.yaml")
    doc = {"results_dir": str(data), "iterations": [it]}
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 1
    err = capsys.readouterr().err
    assert f"is inside {data / 'iter0'}, the folder this run writes for iteration 'iter0'" in err, err
    # An earlier iteration's merged dataset is what a later one reads by design.
    doc["iterations"] = [{"name": "first", "dataset": "builtin:demo"},
                         {"name": "iter0", "dataset": str(data / "first" / "dataset.yaml")}]
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 0


def test_the_cli_prints_its_own_errors_in_one_line_and_bugs_with_their_traceback(tmp_path, monkeypatch, capsys):
    from physrec import cli

    def bug(_args):
        return [][1]

    assert cli.main(["check-config", str(tmp_path / "absent.yaml")]) == 1
    err = capsys.readouterr().err
    assert "absent.yaml" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setattr(cli, "cmd_check_config", bug)
    assert cli.main(["check-config", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error" in err and "Traceback" in err and "IndexError" in err, err

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_check_config", interrupted)
    assert cli.main(["check-config", "x.yaml"]) == 130
    assert capsys.readouterr().err.strip().endswith("physrec check-config: interrupted")


def test_a_record_job_reserves_memory_for_its_plan(tmp_path):
    """mem_mb follows the batch: a 1000-s motion among 63 short ones with a learned tracker that
    saves observations needs GBs (a pass group's buffers and its attempts until written: one
    pass's dense buffers would have been 12 GB); the demo's batch needs little more than the
    process itself."""
    from physrec.recording.memory import BASE_MB, record_job_mb
    from physrec.stages.batch_plan import write_plan
    from physrec.workflow_api import record_mem_mb
    plan = tmp_path / "plan.tsv"
    rows = [{"batch": "b0000000000", "name": f"m{i}", "path": f"m{i}.pkl", "sha256": "0", "duration": 3.0}
            for i in range(63)] + [{"batch": "b0000000000", "name": "long", "path": "long.pkl", "sha256": "0",
                                    "duration": 1000.0}]
    write_plan(plan, rows)
    cfg = config.validate({"iterations": [{"name": "it", "dataset": "x",
                                           "tracker": {"kind": "parc", "model": "model.pt"}}]})
    big = record_mem_mb(cfg, "it", str(plan), "b0000000000")
    assert 4000 < big < 8000, big
    cfg["record"]["save_obs"] = False
    assert BASE_MB["mujoco"] < record_mem_mb(cfg, "it", str(plan), "b0000000000") < big
    assert record_job_mb([2.4] * 5, 30, "mujoco") < BASE_MB["mujoco"] + 20


@pytest.mark.parametrize("keys, message", [
    ({"samples": 10**9}, "samples: 1000000000 is not valid under any of the given schemas"),
    ({"lookahead_steps": 10**9}, "lookahead_steps: 1000000000 is greater than the maximum of 300"),
    ({"samples": 65536, "lookahead_steps": 300}, "about 81 GB for each attempt searched at once"),
])
def test_search_sizes_are_bounded_before_anything_is_allocated(tmp_path, keys, message):
    doc = {**_base(), "iterations": [{"name": "i", "dataset": "builtin:demo", "tracker": {"kind": "sampling", **keys}}]}
    assert message in _error(tmp_path, doc)


def test_check_config_checks_an_override_merged_over_the_default_config(tmp_path, capsys):
    """A file with only the keys that differ fails alone (no iterations) and passes merged over
    config/config.yaml, as Snakemake merges it; the message says what was checked."""
    from physrec import cli
    override = _write(tmp_path, "record:\n  seed_note: 1\n", "bad.yaml")
    assert cli.main(["check-config", str(override), "--over", str(REPO / "config" / "config.yaml")]) == 1
    assert "seed_note" in capsys.readouterr().err
    override = _write(tmp_path, "seed: 3\nrecord:\n  threads: 2\nselection:\n  max_mean_body_pos_error_m: 0.25\n",
                      "mine.yaml")
    assert cli.main(["check-config", str(override)]) == 1
    assert "iterations" in capsys.readouterr().err
    assert cli.main(["check-config", str(override), "--over", str(REPO / "config" / "config.yaml")]) == 0
    said = capsys.readouterr().err
    assert "valid merged over" in said and "1 iteration(s)" in said and "motions are not read" in said
