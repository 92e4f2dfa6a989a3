"""The workflow configuration: validated against the JSON schema before any job runs."""

from __future__ import annotations

import copy
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from typing import TYPE_CHECKING

from physrec.formats.dataset_yaml import expand_env
from physrec.formats.text import path_problem

if TYPE_CHECKING:  # imported where used: select and merge jobs, and the DAG build, need none of it
    from physrec.formats.motion_file import Limits
    from physrec.motion.character import Character
    from physrec.recording.settings import RecordSettings

DEMO = "builtin:demo"
DEMO_FOLDER = "builtin_demo"
# What the workflow writes directly into results_dir besides the iterations' folders (Snakefile).
RESERVED_NAMES = (DEMO_FOLDER, "run_summary.tsv", "run_summary.md", "run_summary.png")


class ConfigError(ValueError):
    """A bad configuration, said in one line."""


def schema() -> dict:
    return yaml.safe_load((resources.files("physrec") / "schemas" / "config.schema.yaml").read_text())


def _fill_defaults(value: Any, sch: dict) -> Any:
    if isinstance(value, dict) and sch.get("type") == "object":
        for key, sub in sch.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _fill_defaults(value[key], sub)
    elif isinstance(value, list) and isinstance(sch.get("items"), dict):
        value = [_fill_defaults(v, sch["items"]) for v in value]
    return value


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _check(value: Any, sch: dict, source: str) -> Any:
    """`value` with its defaults filled in, valid against `sch`; ConfigError naming every problem."""
    value = _fill_defaults(copy.deepcopy(value), sch)
    errors = sorted(jsonschema.Draft202012Validator(sch).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:  # every violation, so that one edit can fix them all
        raise ConfigError(f"{source}: " + "; ".join(f"{_where(e)}: {e.message}" for e in errors))
    return value


def json_section(name: str, text: str, option: str) -> Any:
    """A config section passed to a stage on its command line as JSON (`record`, `selection`,
    `tracker`, `backend`), checked as the workflow checks it, with its defaults."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{option}: not valid JSON ({e.msg} at character {e.pos})") from None
    props = schema()["properties"]
    if name == "tracker":
        value = _check(value, props["iterations"]["items"]["properties"]["tracker"], option)
        return tracker_spec(value, option)
    if name == "backend":  # the record job's form: {"name": ..., "device": ...}
        sch = {"type": "object", "additionalProperties": False, "required": ["name"],
               "properties": {"name": props["backend"], "device": props["device"],
                              "deterministic": props["deterministic"]}}
        value = _check(value, sch, option)
        return backend_spec({"backend": value["name"], "device": value["device"],
                             "deterministic": value["deterministic"]})
    if name == "record" and isinstance(value, dict):  # without it, PARC's (record_physics_keys leaves it out)
        value.setdefault("recovery", "parc")
    return _check(value, props[name], option)


def validate(config: dict, source: str = "config") -> dict:
    """Validated copy of `config` with every default filled in; ConfigError otherwise."""
    cfg = _check(dict(config), schema(), source)
    for where, value in _numbers(cfg):
        if not math.isfinite(value):  # JSON schema lets NaN pass every bound, and inf most
            raise ConfigError(f"{source}: {where}: {value} is not a finite number")
    names = [it["name"] for it in cfg["iterations"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{source}: iterations: duplicate iteration name(s) {', '.join(dup)}")
    for i, name in enumerate(names):
        if name.casefold() in RESERVED_NAMES:  # casefold: on a case-insensitive disk too
            raise ConfigError(f"{source}: iterations.{i}.name: '{name}' is a name the workflow uses in results_dir "
                              f"itself ({', '.join(RESERVED_NAMES)}); choose another")
    for i, it in enumerate(cfg["iterations"]):
        it["tracker"] = tracker_spec(it["tracker"], f"{source}: iterations.{i}.tracker")
    _expand_paths(cfg, source)
    _check_results_dir(cfg, source)
    rec = cfg["record"]
    if rec["physics_hz"] % rec["control_hz"]:
        raise ConfigError(f"{source}: record.physics_hz ({rec['physics_hz']}) must be a multiple of "
                          f"record.control_hz ({rec['control_hz']})")
    return cfg


# The keys each tracker kind takes besides `kind`, and which of them it needs
# (`sampling`: the keys of the schema's $defs.sampling_tracker, each with a default).
TRACKER_KEYS = {"pd": ((), ()), "parc": (("model", "rescue"), ("model",)),
                "exported": (("model", "observation", "rescue"), ("model", "observation"))}


def tracker_spec(spec: dict, where: str = "tracker") -> dict:
    """A tracker spec checked for its kind, with every default of its kind written out."""
    if spec["kind"] == "sampling":
        rest = _check({k: v for k, v in spec.items() if k != "kind"}, schema()["$defs"]["sampling_tracker"], where)
        _check_search_size(rest, where)
        return {"kind": "sampling", **rest}
    allowed, required = TRACKER_KEYS[spec["kind"]]
    for key in spec:
        if key != "kind" and key not in allowed:
            raise ConfigError(f"{where}: kind '{spec['kind']}' takes no '{key}'")
    for key in required:
        if key not in spec:
            raise ConfigError(f"{where}: kind '{spec['kind']}' needs '{key}'")
    if "rescue" in spec:  # the search that takes over what the policy fails: a sampling tracker's keys
        rescue = dict(spec["rescue"])
        if rescue.setdefault("kind", "sampling") != "sampling":
            raise ConfigError(f"{where}.rescue: kind must be 'sampling' (the search), not '{rescue['kind']}'")
        return {**spec, "rescue": tracker_spec(rescue, f"{where}.rescue")}
    return spec


# The search keeps every child's states over its window and look-ahead, about 1 kB a frame,
# for each attempt it searches at once; a window's last retry has 2**window_retries x samples.
SEARCH_FRAME_BYTES = 1024
MAX_SEARCH_BYTES_PER_ATTEMPT = 8_000_000_000


def _check_search_size(s: dict, where: str) -> None:
    samples = 65536 if s["samples"] == "auto" else s["samples"]
    frames = samples * 2 ** s["window_retries"] * (s["window_steps"] + s["lookahead_steps"])
    if frames * SEARCH_FRAME_BYTES > MAX_SEARCH_BYTES_PER_ATTEMPT:
        raise ConfigError(f"{where}: samples x 2**window_retries x (window_steps + lookahead_steps) = {frames:,} "
                          f"frames, about {frames * SEARCH_FRAME_BYTES / 1e9:.0f} GB for each attempt searched at "
                          f"once (at most {MAX_SEARCH_BYTES_PER_ATTEMPT / 1e9:.0f} GB): lower samples, "
                          "window_retries or lookahead_steps")


def _numbers(value: Any, where: str = "") -> Any:
    """(key path, value) of every float in a config (ints are always finite)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{where}.{i}")
    elif isinstance(value, float):
        yield where, value


def _expand_paths(cfg: dict, source: str) -> None:
    """$VARS in the config's paths come from the environment, like those in dataset YAMLs. A path
    Snakemake would read as a pattern ({...}) or that tables cannot hold is refused here."""
    places = [(cfg, "character", "character")] + [
        (it, key, f"iterations.{i}.{key}") for i, it in enumerate(cfg["iterations"]) for key in ("dataset", "base_dataset")
    ] + [(it["tracker"], "model", f"iterations.{i}.tracker.model") for i, it in enumerate(cfg["iterations"])]
    for holder, key, where in places:
        if holder.get(key):
            try:
                holder[key] = expand_env(holder[key])
            except KeyError as e:
                raise ConfigError(f"{source}: {where}: environment variable ${e.args[0]} is not set") from None
            if path_problem(holder[key]):
                raise ConfigError(f"{source}: {where}: {holder[key]!r} {path_problem(holder[key])}")


def _check_results_dir(cfg: dict, source: str) -> None:
    """results_dir names a folder of its own: every output path starts with it and a slash."""
    results = cfg["results_dir"]
    if path_problem(results):
        raise ConfigError(f"{source}: results_dir: {results!r} {path_problem(results)}")
    normal = os.path.normpath(results) if results else ""
    if normal in ("", os.sep, "//"):
        raise ConfigError(f"{source}: results_dir: {results!r} names no folder of its own (the outputs would go "
                          "to the root of the file system)")
    cfg["results_dir"] = normal


def check_files(cfg: dict, source: str = "config") -> None:
    """The files a validated config names must exist before any job runs: the character, the
    learned trackers' models and the dataset YAMLs that the workflow does not write itself
    (the datasets' motions are checked by index, one by one)."""
    from physrec.motion.character import is_builtin
    places = [("character", cfg["character"], "character file")] if not is_builtin(cfg["character"]) else []
    places += [(f"iterations.{i}.tracker.model", it["tracker"]["model"], "model file")
               for i, it in enumerate(cfg["iterations"]) if it["tracker"].get("model")]
    _check_inputs_outside_outputs(cfg, places, source)
    # Datasets, unless the workflow writes them (an earlier iteration's merged dataset.yaml).
    made = Path(cfg["results_dir"]).resolve()
    places += [(f"iterations.{i}.{key}", it[key], "dataset file") for i, it in enumerate(cfg["iterations"])
               for key in ("dataset", "base_dataset") if it.get(key) and it[key] != DEMO
               and made not in Path(it[key]).resolve().parents]
    for where, path, what in places:
        if not Path(path).is_file():
            raise ConfigError(f"{source}: {where}: {path}: {what} not found")
    if os.path.exists(cfg["results_dir"]) and not os.path.isdir(cfg["results_dir"]):
        raise ConfigError(f"{source}: results_dir: {cfg['results_dir']} exists and is not a folder")
    from physrec.motion.character import Character, CharacterError
    try:
        character = Character.load(cfg["character"])
    except CharacterError as e:
        raise ConfigError(f"{source}: character: {e}") from None
    check_record_settings(cfg["record"], character, source)


def _check_inputs_outside_outputs(cfg: dict, files: list[tuple[str, str, str]], source: str) -> None:
    """No input may sit in a folder this run writes: merge would replace a dataset YAML there, and
    Snakemake, finding the cycle, skips the rule and exits 0. The one exception is an earlier
    iteration's merged dataset.yaml, which a later iteration reads by design."""
    results = Path(cfg["results_dir"]).resolve()
    outputs = {it["name"]: results / it["name"] for it in cfg["iterations"]}
    inputs = list(files)
    for i, it in enumerate(cfg["iterations"]):
        for key in ("dataset", "base_dataset"):
            if it.get(key) and it[key] != DEMO:
                earlier = {outputs[e["name"]] / "dataset.yaml" for e in cfg["iterations"][:i]}
                if Path(it[key]).resolve() not in earlier:
                    inputs.append((f"iterations.{i}.{key}", it[key], "dataset file"))
    for where, path, what in inputs:
        resolved = Path(path).resolve()
        for name, folder in outputs.items():
            if resolved == folder or folder in resolved.parents:
                raise ConfigError(f"{source}: {where}: {path}: this {what} is inside {folder}, the folder this run "
                                  f"writes for iteration '{name}' (results_dir/{name}); an input there would be "
                                  "overwritten. Move it out, or set results_dir to another folder")


def check_record_settings(rec: dict, character: Character, source: str) -> None:
    """The `record` settings that only make sense for a given character."""
    limits = rec["termination"]["body_offset_limits_m"]
    if len(limits) != character.num_joints:
        raise ConfigError(f"{source}: record.termination.body_offset_limits_m has {len(limits)} values; the "
                          f"character has {character.num_joints} non-root bodies")
    least = rec["termination"]["root_pos_error_m"] + character.reach
    if rec["terrain_margin_m"] < least:
        raise ConfigError(f"{source}: record.terrain_margin_m ({rec['terrain_margin_m']:g}) is less than "
                          f"record.termination.root_pos_error_m + the character's reach ({least:.2f} m): "
                          "the character could touch terrain that is not simulated")


def _read_mapping(path: str | Path) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys")
    return raw


def merged_over(base: dict, override: dict) -> dict:
    """`override` merged over `base` as Snakemake merges `--configfile` over the Snakefile's
    configfile: mappings key by key, anything else (lists included) replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged_over(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(path: str | Path, over: str | Path | None = None) -> dict:
    """The validated config of `path`, merged first over the config file `over` when given."""
    raw = _read_mapping(path)
    if over is not None:
        raw = merged_over(_read_mapping(over), raw)
    return validate(raw, str(path))


def record_settings(rec: dict) -> RecordSettings:
    """RecordSettings from the validated `record` section."""
    from physrec.motion.termination import TerminationSettings
    from physrec.recording.settings import RecordSettings
    from physrec.sim.world import PhysicsSettings
    term = rec["termination"]
    return RecordSettings(
        physics=PhysicsSettings(control_hz=rec["control_hz"], physics_hz=rec["physics_hz"],
                                friction=rec["friction"], solver_iterations=rec["solver_iterations"]),
        termination=TerminationSettings(
            root_pos_error=term["root_pos_error_m"], root_rot_error=math.radians(term["root_rot_error_deg"]),
            body_offset_limits=tuple(term["body_offset_limits_m"]), end_tolerance=term["end_tolerance_s"]),
        start_fractions=tuple(sorted(rec["start_fractions"])),
        min_remaining=rec["min_remaining_s"],
        recovery=rec["recovery"],
        min_segment=rec["min_segment_s"],
        max_restarts=rec["max_restarts"],
        max_steps_per_call=rec["max_steps_per_call"],
        save_obs=rec["save_obs"],
        terrain_margin=rec["terrain_margin_m"],
        max_duration=rec["max_duration_s"],
    )


def limits(section: dict, max_duration_s: float) -> Limits:
    """formats.motion_file.Limits from the validated `limits` section and record.max_duration_s
    (the trajectory files' longest episode: a recording setting, and a limit index checks)."""
    from physrec.formats.motion_file import Limits
    return Limits(**section, max_duration_s=max_duration_s)


# batch_size: auto. CPU: per-step cost is flat in the batch and per-batch costs (world
# set-up, Python per control step) shrink with it; 64 keeps a job at minutes. GPU: one job
# takes thousands of motions and records them in chunks that fit the device's memory.
AUTO_BATCH = {"mujoco": 64, "mujoco_warp": 4096}


def batch_size(cfg: dict) -> int:
    """Expected motions per batch (the split's parameter)."""
    value = cfg["batch_size"]
    return AUTO_BATCH[cfg["backend"]] if value == "auto" else int(value)


def backend_spec(cfg: dict) -> dict:
    """The simulator a record job uses: what the Snakefile passes to it (and the config hash
    holds: the GPU-only keys only for the GPU backend, so CPU recordings keep their hash)."""
    if cfg["backend"] != "mujoco_warp":
        return {"name": cfg["backend"], "device": "cpu"}
    return {"name": cfg["backend"], "device": cfg["device"], "deterministic": cfg["deterministic"]}


# `record` keys that change how or where, not what is recorded.
NOT_RECORDED_KEYS = ("threads", "merged_trajectories")
# The keys of record.recovery: segments (and `selection`'s), left out of the params and hashes
# with recovery: parc, so that PARC's recordings keep the hashes they had before the keys existed.
SEGMENT_RECORD_KEYS = ("recovery", "min_segment_s", "max_restarts")
SEGMENT_SELECTION_KEYS = ("segment_margin_s",)


def record_physics_keys(rec: dict) -> dict:
    """The part of `record` that changes what is simulated and written per batch."""
    drop = NOT_RECORDED_KEYS + (SEGMENT_RECORD_KEYS if rec.get("recovery", "parc") == "parc" else ())
    return {k: v for k, v in rec.items() if k not in drop}


def selection_keys(sel: dict, recovery: str) -> dict:
    """The part of `selection` that applies to recordings of `recovery` (record.recovery)."""
    return {k: v for k, v in sel.items() if recovery == "segments" or k not in SEGMENT_SELECTION_KEYS}
