"""What the Snakefile asks of the package: paths and inputs. Wiring helpers only, no stage logic."""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache

from physrec.render.gl import disable_gl_keeping_choice

disable_gl_keeping_choice()  # parsing the workflow imports MuJoCo, and never renders

from physrec import RECORDING_VERSION, SELECTION_VERSION
from physrec import config as cfgmod
from physrec.motion.character import is_builtin
from physrec.stages.batch_plan import batch_digest, batch_ids, batch_rows
from physrec.formats.dataset_yaml import DatasetError, read_dataset
from physrec.stages.index import display_path
from physrec.demo import DEMO_NAMES, demo_motion_path
from physrec.formats.hashing import sha256_file, stable_hash
from physrec.formats.text import path_problem
from physrec.render import VIDEO_KINDS, video_quotas

__all__ = ["batch_digest", "batch_ids", "DEMO_NAMES", "RECORDING_VERSION", "SELECTION_VERSION", "stable_hash"]


def export_package_source(folder: str) -> None:
    """Let jobs run `python -m physrec` from this checkout with whichever Python their
    environment provides: the installed one, or a conda env from envs/ (--sdm conda)."""
    paths = [folder] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != folder]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)


def demo_dir(results: str) -> str:
    return f"{results}/{cfgmod.DEMO_FOLDER}"


def demo_outputs(results: str) -> list[str]:
    return [f"{demo_dir(results)}/{demo_motion_path(n)}" for n in DEMO_NAMES]


def dataset_yaml(spec: str, results: str) -> str:
    return f"{demo_dir(results)}/dataset.yaml" if spec == cfgmod.DEMO else spec


def dataset_inputs(spec: str, results: str) -> list[str]:
    """The dataset YAML and its motion files that exist (the indexer reports missing ones)."""
    if spec == cfgmod.DEMO:
        return [dataset_yaml(spec, results)] + demo_outputs(results)
    try:
        entries = read_dataset(spec)
    except DatasetError:
        return [spec]  # the index job reports the problem
    # A path Snakemake would read as a pattern is left out; index reports its motion invalid.
    return [spec] + sorted({p for e in entries if e.path.is_file() and not path_problem(p := display_path(e.path))})


def base_dataset(cfg: dict, iteration: str) -> str:
    """Dataset carried into this iteration's merged dataset: configured, else the previous iteration's."""
    names = [it["name"] for it in cfg["iterations"]]
    i = names.index(iteration)
    explicit = cfg["iterations"][i].get("base_dataset")
    if explicit:
        return explicit
    return f"{cfg['results_dir']}/{names[i - 1]}/dataset.yaml" if i > 0 else ""


def batch_sources(plan: str, batch: str) -> list[str]:
    return [r["path"] for r in batch_rows(plan, batch)]


def record_threads(cfg: dict, cores: int | None, envs: int) -> int:
    """Threads of a record job: the configured number, or (0) every core Snakemake was given,
    but never more than the batch has environments, so small batches leave cores to others."""
    wanted = cfg["record"]["threads"]
    return max(1, min(envs, wanted if wanted > 0 else (cores or os.cpu_count() or 1)))


@lru_cache(maxsize=8)
def _observation_size(name: str, character: str) -> int:
    from physrec.motion.character import Character
    from physrec.observations import observation_size
    return observation_size(name, Character.load(character))


def record_mem_mb(cfg: dict, iteration: str, plan: str, batch: str) -> int:
    """Host memory of a record job, from its motions' durations (recording/memory.py)."""
    from physrec.recording.memory import record_job_mb
    rec = cfg["record"]
    tracker = cfg["iterations"][[it["name"] for it in cfg["iterations"]].index(iteration)]["tracker"]
    learned = tracker.get("observation") or ("parc" if tracker["kind"] == "parc" else None)
    obs = _observation_size(learned, cfg["character"]) if learned and rec["save_obs"] else 0
    return record_job_mb([float(r["duration"]) for r in batch_rows(plan, batch)], rec["control_hz"], cfg["backend"],
                         obs)


def record_gpus(cfg: dict) -> int:
    """GPUs a record job takes: one on the GPU backend, so `--resources gpu=N` runs N at once."""
    return int(cfg["backend"] == "mujoco_warp" and cfg["device"] != "cpu")


def character_inputs(cfg: dict) -> list[str]:
    spec = cfg["character"]
    return [] if is_builtin(spec) else [spec]


def tracker_inputs(tracker: dict) -> list[str]:
    """A learned tracker's model file: an input of every record job that uses it."""
    return [tracker["model"]] if tracker.get("model") else []


@lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def _content(path: str) -> str:
    """sha256 of a file (cached by time stamp and size: a DAG build asks once per job)."""
    st = os.stat(path)
    return _file_sha256(os.path.abspath(path), st.st_mtime_ns, st.st_size)


def recording_identity(cfg: dict, iteration: str, plan: str, batch: str) -> str:
    """Everything a batch's recording depends on, as one digest: its members, the record
    settings, tracker (and its model file's content), backend, character, seed and
    RECORDING_VERSION. select and merge carry it as a param, so that a recording that is
    due again (and failed, leaving no outputs) is not shadowed by their older outputs:
    Snakemake does not rerun a job only because an input it made is missing."""
    tracker = cfg["iterations"][[it["name"] for it in cfg["iterations"]].index(iteration)]["tracker"]
    files = [f for f in [*tracker_inputs(tracker), *character_inputs(cfg)] if os.path.isfile(f)]
    return stable_hash([batch_digest(plan, batch), cfgmod.record_physics_keys(cfg["record"]), tracker,
                        cfgmod.backend_spec(cfg), cfg["character"], cfg["seed"], RECORDING_VERSION,
                        [_content(f) for f in files]])


def json_arg(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def video_dirs(cfg: dict, results: str, iteration: str, plan: str) -> list[str]:
    """The video folders of an iteration (rule videos' outputs): report.videos' kinds, for the
    batches that report.max_videos gives videos."""
    quotas = video_quotas(batch_ids(plan), cfg["report"]["max_videos"])
    return [f"{results}/{iteration}/report/videos/{b}/{kind}" for b in quotas for kind in VIDEO_KINDS[cfg["report"]["videos"]]]


def video_quota(cfg: dict, plan: str, batch: str) -> int:
    """The videos of each kind that `batch` renders (0: every motion)."""
    return video_quotas(batch_ids(plan), cfg["report"]["max_videos"]).get(batch) or 0


_said: set[str] = set()


def _token(workflow, folder: str, damage: str | None, job: str) -> str:
    """A job's integrity token (stages/integrity.py), saying once, in the planning Snakemake,
    what was found and which job runs again because of it."""
    from physrec.stages.integrity import job_token
    if damage and workflow.is_main_process and damage not in _said:
        _said.add(damage)
        print(f"physrec: {damage}; {job} runs again", file=sys.stderr)
    return job_token(folder, damage)


def record_token(workflow, results: str, iteration: str, batch: str) -> str:
    from physrec.stages.integrity import record_damage
    folder = f"{results}/{iteration}/record/{batch}"
    return _token(workflow, folder, record_damage(folder), f"record {iteration}/{batch}")


def select_token(workflow, results: str, iteration: str, batch: str) -> str:
    from physrec.stages.integrity import select_damage
    folder = f"{results}/{iteration}/select/{batch}"
    return _token(workflow, folder, select_damage(folder), f"select {iteration}/{batch}")


def merge_token(workflow, results: str, iteration: str, plan: str) -> str:
    from physrec.stages.integrity import merge_damage
    folder = f"{results}/{iteration}"
    select_dirs = [f"{folder}/select/{b}" for b in batch_ids(plan)]
    return _token(workflow, folder, merge_damage(folder, select_dirs), f"merge {iteration}")
