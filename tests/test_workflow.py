"""The workflow end to end: real Snakemake (a subprocess) on tiny inputs in temporary project folders.

Each project folder gets copies of the repo's Snakefile, workflow/rules, workflow/schemas and
config/ (the package itself is installed) plus a config file written here and passed with
--configfile. Snakemake runs are the expensive part (seconds each), so projects are built once
per module and the assertions are grouped.
"""

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from bad_motions import CORPUS, CORPUS_LIMITS, CORPUS_MAX_DURATION_S, build_corpus
from maniskill_layout import check_layout, maniskill_load, maniskill_merge
from snakemake_project import BIN, CONFIG, IT, REPO, base_config, make_project, snakemake, write_config
from physrec.formats.dataset_yaml import motion_name, read_dataset, write_dataset
from physrec.demo import demo_motions, write_demo
from physrec.formats.motion_file import MotionData, MotionFile, read_motion_file, write_motion_file
from physrec.formats.tables import read_tsv_records
from physrec.formats.text import one_line
from physrec.motion.terrain import Heightfield
from physrec.stages.batch_plan import batch_ids

# -- project folders and Snakemake ------------------------------------------------------------------
def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running (or in a dry run); {} if there is none."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    if not m:
        return {}
    counts = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def jobs_run(output: str, rule: str) -> int:
    """How many jobs of `rule` a real run started (one 'rule X:' block each; works across checkpoints)."""
    return len(re.findall(rf"^\s*(?:local)?(?:rule|checkpoint) {rule}:$", output, re.M))


def plan_members(project: Path, results: str = "results") -> dict[str, list[str]]:
    plan = {}
    for r in read_tsv_records(project / results / IT / "batches" / "plan.tsv"):
        plan.setdefault(r["batch"], []).append(r["name"])
    return {b: sorted(v) for b, v in plan.items()}


def h5_mtimes(project: Path, results: str = "results") -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns
            for p in (project / results / IT / "record").glob("*/rollouts.h5")}


def _short(mf: MotionFile, seconds: float) -> MotionFile:
    n = int(round(seconds * mf.motion.fps)) + 1
    m = mf.motion
    return MotionFile(MotionData(m.root_pos[:n], m.root_rot[:n], m.joint_rot[:n], m.body_contacts[:n], m.fps,
                                 m.loop_mode), mf.terrain, mf.misc)


def write_demo_copies(root: Path, copies: int) -> Path:
    """The demo dataset (write_demo) plus `copies` extra copies of every demo motion under other names."""
    yaml_path = write_demo(root)
    entries = [(e.file, e.weight) for e in read_dataset(yaml_path)]
    for k in range(1, copies + 1):
        for name, mf in demo_motions().items():
            rel = f"copies{k}/{name}_copy{k}.pkl"
            write_motion_file(root / rel, mf)
            entries.append((rel, mf.motion.duration))
    write_dataset(yaml_path, entries)
    return yaml_path


# ======================================================================================================
# 1, 2, 4, 8: the built-in demo
# ======================================================================================================
@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("wf") / "demo", base_config("builtin:demo", report={"videos": "all"}))
    r = snakemake(project)
    return project, r


def _chromium_dom(page: Path, script: str = "", budget_ms: int = 10000) -> str:
    """The DOM headless Chromium renders of `page`, with `script` run in it first (a copy is opened)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium to render the report in (Debian: apt-get install chromium; .ci/run installs it)")
    text = page.read_text()
    end = text.rfind("</body>")
    opened = page.with_name(f"opened_{page.name}")
    opened.write_text(text[:end] + f"<script>{script}</script>" + text[end:])
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--virtual-time-budget={budget_ms}",
                          "--autoplay-policy=no-user-gesture-required", "--dump-dom", opened.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    return re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)  # what the page's JavaScript rendered


# Clicks through the report as a user does: the iteration, its kept videos, one motion's entry.
_OPEN_VIDEO = """
function link(t) { return [...document.querySelectorAll('a')].find(a => a.textContent.trim() === t); }
setTimeout(() => link('%(it)s').click(), 500);
setTimeout(() => link('videos: kept').click(), 1500);
setTimeout(() => [...document.querySelectorAll('td')].find(td => td.textContent.trim() === '%(motion)s')
                 .closest('tr').querySelector('a').click(), 2500);
"""
_PROBE_VIDEO = """
const v = document.querySelector('video');
const say = t => document.body.insertAdjacentHTML('beforeend', '<p id="probe">' + t + '</p>');
v.addEventListener('loadedmetadata', () => say('duration ' + v.duration + ' size ' + v.videoWidth + 'x' + v.videoHeight));
v.addEventListener('error', () => say('error ' + v.error.code));
"""


def test_the_report_shows_each_iteration_and_the_run(demo_project, tmp_path):
    """snakemake --report: one HTML file with the workflow's description, per iteration its
    summary page, four plots, manifest and videos, and the run summary; opened in headless
    Chromium (where it is installed) and clicked through, it lists the kept motions' videos,
    shows one inline, and Chromium plays that video for its recorded length."""
    project, _ = demo_project
    html, archive = tmp_path / "report.html", tmp_path / "report.zip"
    snakemake(project, "--report", str(html))
    snakemake(project, "--report", str(archive))
    text = html.read_text()
    for name in ("summary.html", "success_by_start.png", "errors_over_time.png", "durations.png",
                 "failure_location.png", "manifest.tsv", "run_summary.tsv", "run_summary.png", "stand_flat.html", "climb_step.html"):
        assert name in text, name
    import zipfile
    names = zipfile.ZipFile(archive).namelist()
    for name in ("success_by_start.png", "summary.html", "run_summary.tsv", "wave_flat.html"):
        assert any(n.endswith(f"/{name}") for n in names), (name, names)
    page = (project / "results" / IT / "report" / "summary.html").read_text()
    assert "valid motions recorded" in page and "<th>start fraction</th>" in page
    # Videos: one per kept motion of each batch, one per motion that was not kept.
    selected = [r for b in plan_members(project) for r in read_tsv_records(project / "results" / IT / "select" / b /
                                                                           "selected.tsv")]
    kept = sorted(r["motion"] for r in selected if r["status"].startswith("recorded"))
    videos = project / "results" / IT / "report" / "videos"
    assert sorted(p.stem for p in videos.glob("*/kept/*.mp4")) == kept and len(kept) >= 2
    assert sorted(p.stem for p in videos.glob("*/failed/*.mp4")) == sorted(r["motion"] for r in selected
                                                                          if r["motion"] not in kept)
    shown = _chromium_dom(html)
    assert "Loading Snakemake Report" in shown and "physrec records physics-based versions" in shown
    nav = re.sub(r"<[^>]+>", " ", shown)
    assert re.search(rf"Results\s+{IT}\s+run", nav), nav[:2000]
    shown = _chromium_dom(html, _OPEN_VIDEO % {"it": IT, "motion": kept[0]})
    listed = re.sub(r"<[^>]+>", " ", shown)
    assert all(m in listed for m in kept), listed[:3000]
    frame = re.search(r'<iframe src="data:text/html;charset=utf8;filename=([^;]+);base64,([^"]+)"', shown)
    assert frame and frame.group(1) == f"{kept[0]}.html", shown[-3000:]
    import base64
    inline = tmp_path / frame.group(1)
    inline.write_bytes(base64.b64decode(frame.group(2)))
    assert "<video" in inline.read_text() and kept[0] in inline.read_text()
    played = re.search(r'<p id="probe">duration ([0-9.]+) size (\d+)x(\d+)', _chromium_dom(inline, _PROBE_VIDEO, 5000))
    kept_row = next(r for r in selected if r["motion"] == kept[0])
    assert played, "Chromium could not load the report's video"
    assert (played.group(2), played.group(3)) == ("640", "360")
    assert abs(float(played.group(1)) - (float(kept_row["recorded_duration"]) + 1 / 30)) < 0.1


def test_without_headless_opengl_the_videos_are_drawn_in_software(demo_project, tmp_path, monkeypatch):
    """A machine with neither EGL nor OSMesa (here: MUJOCO_GL=osmesa, and no OSMesa installed):
    the videos jobs say why and draw with physrec's software renderer; the videos play."""
    import ctypes.util
    if ctypes.util.find_library("OSMesa"):
        pytest.skip("OSMesa is installed here")
    project = tmp_path / "no_gl"
    shutil.copytree(demo_project[0], project, symlinks=True)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    r = snakemake(project, "--forcerun", "videos")
    assert jobs_run(r.stdout + r.stderr, "videos") == len(plan_members(project))
    logs = "".join(p.read_text() for p in (project / "logs" / IT / "videos").glob("*.log"))
    assert "no headless OpenGL (MUJOCO_GL=osmesa" in logs and "software renderer" in logs
    videos = sorted((project / "results" / IT / "report" / "videos").glob("*/kept/*.mp4"))
    assert videos
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(videos[0]))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8) for f in reader]
    assert meta["size"] == (640, 360) and len(frames) > 30 and np.std(frames[len(frames) // 2]) > 10


def test_demo_run_writes_every_artifact(demo_project):
    project, _ = demo_project
    res = project / "results" / IT
    assert (res / "dataset" / "manifest.tsv").is_file()
    assert (res / "batches" / "plan.tsv").is_file()
    batches = sorted(plan_members(project))
    assert batches
    for b in batches:
        for f in ("rollouts.h5", "rollouts.json", "attempts.tsv", "terrain.pkl", "record_env.yaml", "record_args.txt"):
            assert (res / "record" / b / f).is_file(), f"record/{b}/{f}"
            assert (res / "record" / b / f).stat().st_size > 0
        assert (res / "select" / b / "selected.tsv").is_file()
        assert (project / "logs" / IT / "record" / f"{b}.log").is_file()
        assert (project / "logs" / IT / "select" / f"{b}.log").is_file()
        assert (project / "benchmarks" / IT / "record" / f"{b}.tsv").is_file()
        assert (project / "benchmarks" / IT / "select" / f"{b}.tsv").is_file()
    for f in ("manifest.tsv", "summary.json", "summary.md", "dataset.yaml"):
        assert (res / f).is_file(), f
    for job in ("index", "split", "merge"):
        assert (project / "logs" / IT / f"{job}.log").is_file(), job
        bench = (project / "benchmarks" / IT / f"{job}.tsv").read_text().splitlines()
        assert bench[0].split("\t")[0] == "s" and len(bench) == 2, job
    assert (project / "logs" / "demo_dataset.log").is_file()
    record_log = (project / "logs" / IT / "record" / f"{batches[0]}.log").read_text()
    assert "recording" in record_log and "finished" in record_log
    # Nothing is left behind by atomic writes.
    leftovers = [p for p in (project / "results").rglob("*") if p.is_file() and (".tmp" in p.name or "~" in p.name)]
    assert not leftovers, leftovers


def test_demo_summary_and_motions(demo_project):
    project, _ = demo_project
    res = project / "results" / IT
    summary = json.loads((res / "summary.json").read_text())
    m = summary["motions"]
    assert m["total"] == m["valid"] == 6 and m["invalid"] == 0
    assert m["recorded_full_length"] >= 1
    assert m["failed"] >= 1
    assert m["recorded_later_start"] >= 1
    assert m["recorded"] == m["recorded_full_length"] + m["recorded_later_start"]
    assert "summary" in (res / "summary.md").read_text().lower()
    manifest = read_tsv_records(res / "manifest.tsv")
    assert len(manifest) == 6
    recorded = {r["name"] for r in manifest if r["status"].startswith("recorded")}
    files = sorted(p.name for p in (res / "recorded_motions").glob("*.pkl"))
    assert files == sorted(f"{n}_rec.pkl" for n in recorded)
    for f in files:
        mf = read_motion_file(res / "recorded_motions" / f)
        assert mf.motion.fps == 30 and mf.terrain is not None
        assert mf.misc["physrec:tracker"] == "tracker:pd"
    # The next dataset lists the recorded motions with their weights and loads with physrec's reader.
    entries = read_dataset(res / "dataset.yaml")
    assert sorted(motion_name(e.path) for e in entries) == sorted(f"{n}_rec" for n in recorded)
    weights = {r["name"]: float(r["weight"]) for r in manifest if r["name"] in recorded}
    for e in entries:
        assert e.path.is_file()
        assert e.weight == pytest.approx(weights[motion_name(e.path).removesuffix("_rec")])
        assert e.weight > 0


def test_demo_trajectory_files(demo_project):
    project, _ = demo_project
    res = project / "results" / IT
    source_sha = {r["name"]: r["sha256"] for r in read_tsv_records(res / "dataset" / "manifest.tsv")}
    for b in plan_members(project):
        rec = res / "record" / b
        info = check_layout(rec / "rollouts.h5")
        attempts = read_tsv_records(rec / "attempts.tsv")
        episodes = info["episodes"]
        assert len(episodes) == len(attempts) > 0
        assert info["source_type"] == "tracker:pd"
        for i, ep in enumerate(episodes):
            assert ep["batch"] == b and ep["terrain_file"] == "terrain.pkl"
            assert ep["source_sha256"] == source_sha[ep["motion"]]
            assert attempts[i]["motion"] == ep["motion"] and attempts[i]["attempt"] == f"traj_{i}"
            assert int(attempts[i]["steps"]) == ep["elapsed_steps"]
        assert maniskill_load(rec / "rollouts.h5") == sum(ep["elapsed_steps"] for ep in episodes)
        # PARC's companions.
        terrain = pickle.loads((rec / "terrain.pkl").read_bytes())
        assert terrain["motion_data"] is None
        td, misc = pickle.loads(terrain["terrain_data"]), pickle.loads(terrain["misc_data"])
        assert td["hf"].ndim == 2 and td["dx"] == pytest.approx(0.4)
        n = len({ep["motion"] for ep in episodes})
        assert misc["motion_offsets"].shape == (n, 1, 2)
        verts, tris = misc["all_terrain_verts"], misc["all_terrain_tris"]  # 8 corners, 12 triangles per box
        assert len(verts) == 8 * len(tris) // 12 and tris.max() == len(verts) - 1
        assert verts[:, 2].max() == pytest.approx(td["hf"].max())
        env = yaml.safe_load((rec / "record_env.yaml").read_text())
        assert env["control_hz"] == 30 and env["physics_hz"] == 120
        args = (rec / "record_args.txt").read_text()
        assert "record" in args and b in args


def test_dry_run_after_complete_run_has_nothing_to_do(demo_project):
    project, _ = demo_project
    r = snakemake(project, "-n")
    out = r.stdout + r.stderr
    assert "Nothing to be done" in out or job_counts(out).get("total", -1) == 0, out[-3000:]
    # Threads change how fast, not what is simulated: more threads and cores do not re-record.
    original = (project / CONFIG).read_text()
    cfg = yaml.safe_load(original)
    cfg["record"]["threads"] = 3
    try:
        write_config(project, cfg)
        r = snakemake(project, "-n", "--cores", "3")
    finally:
        (project / CONFIG).write_text(original)
    out = r.stdout + r.stderr
    assert "Nothing to be done" in out, out[-3000:]
    # A motion file touched without a change of content re-records nothing.
    motion = next((project / "results" / "builtin_demo").rglob("*.pkl"))
    os.utime(motion)
    out = snakemake(project, "-n").stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_touching_a_large_source_records_nothing_again(tmp_path):
    """Snakemake compares checksums only of files under 1 MB; for larger ones a new time stamp
    alone would rerun the jobs that read them. Content decides: record, select and videos
    read their sources as `ancient`, and the batch digest carries the sources' sha256."""
    stand = demo_motions()["stand_flat"]
    big = Heightfield(np.zeros((700, 700), np.float32), np.array([-140.0, -140.0], np.float32), 0.4)
    project = make_project(tmp_path / "big", base_config("data/dataset.yaml"))
    write_motion_file(project / "data" / "big_stand.pkl", MotionFile(_short(stand, 1.0).motion, big, None))
    write_dataset(project / "data" / "dataset.yaml", [("big_stand.pkl", 1.0)])
    assert (project / "data" / "big_stand.pkl").stat().st_size > 2_000_000
    snakemake(project)
    os.utime(project / "data" / "big_stand.pkl")
    r = snakemake(project)
    assert jobs_run(r.stdout + r.stderr, "index") == 1  # it reads the file again to know
    assert jobs_run(r.stdout + r.stderr, "record") == 0 and jobs_run(r.stdout + r.stderr, "select") == 0


def test_another_character_indexes_and_records_again(demo_project, tmp_path):
    humanoid = REPO.parent / "shared" / "parc_samples" / "humanoid.xml"
    if not humanoid.is_file():
        pytest.skip(f"PARC's humanoid.xml absent ({humanoid}): ../shared is not mounted")
    project = tmp_path / "copy"
    shutil.copytree(demo_project[0], project, symlinks=True)
    cfg = yaml.safe_load((project / CONFIG).read_text())
    cfg["character"] = str(humanoid)
    write_config(project, cfg)
    snakemake(project, "--until", "split")  # the plan is a checkpoint: a dry run sees past it only then
    jobs = planned(snakemake(project, "-n").stdout)
    assert jobs == {("record", IT): 1, ("select", IT): 1, ("merge", IT): 1, ("plots", IT): 1, ("videos", IT): 1}, jobs


def test_the_rule_graph_shows_every_file_a_rule_reads(demo_project):
    """record reads the batch plan: the graph draws split -> record (and the rest of the flow)."""
    project, _ = demo_project
    dot = snakemake(project, "--rulegraph").stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}
    assert {("index", "split"), ("split", "record"), ("record", "select"), ("select", "merge"),
            ("split", "merge")} <= edges, edges
    # Re-splitting rewrites the plan: its time stamp alone re-records nothing.
    os.utime(project / "results" / IT / "batches" / "plan.tsv")
    out = snakemake(project, "-n").stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_threshold_change_reruns_select_and_merge_only(demo_project, tmp_path):
    src, _ = demo_project
    project = tmp_path / "demo_copy"
    shutil.copytree(src, project, symlinks=True)
    before = h5_mtimes(project)
    assert before
    cfg = yaml.safe_load((project / CONFIG).read_text())
    cfg["selection"] = {"min_duration_s": 2.3}
    write_config(project, cfg)
    dry = snakemake(project, "-n")
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts.get("select") == len(before), dry.stdout[-3000:]
    assert counts.get("merge") == 1
    assert "record" not in counts and "index" not in counts, counts
    snakemake(project)
    assert h5_mtimes(project) == before
    summary = json.loads((project / "results" / IT / "summary.json").read_text())
    # The later-start recording of the demo covers about 2.04 s: now too short.
    assert summary["motions"]["rejected"] >= 1
    rows = {r["name"]: r for r in read_tsv_records(project / "results" / IT / "manifest.tsv")}
    rejected = [r for r in rows.values() if r["status"] == "rejected"]
    assert all("duration" in r["fail_reason"] for r in rejected)
    assert not (project / "results" / IT / "recorded_motions" / f"{rejected[0]['name']}_rec.pkl").exists()


def test_bad_config_is_refused_naming_the_key(tmp_path):
    project = make_project(tmp_path / "badcfg", {**base_config("builtin:demo"), "batchsize": 4})
    r = snakemake(project, "-n", check=False)
    assert r.returncode != 0
    assert "batchsize" in r.stdout + r.stderr
    # Values no job could use are refused before any job runs, in the config's words (issue 10;
    # test_config.py has the other cases of physrec.config, which the Snakefile calls).
    bad = [(base_config("builtin:demo", record={"physics_hz": 100}), "record.physics_hz"),
           (base_config("builtin:demo", record={"friction": float("nan")}), "record.friction: nan is not a finite"),
           (base_config("builtin:demo", results_dir=""), "results_dir: '' names no folder of its own"),
           (base_config("builtin:demo", record={"termination": {"body_offset_limits_m": [0.7, 1.0, 0.7]}}),
            "body_offset_limits_m has 3 values; the character has 14")]
    for cfg, message in bad:
        write_config(project, cfg)
        r = snakemake(project, "-n", check=False)
        assert r.returncode != 0 and message in r.stdout + r.stderr, (message, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
    assert not (project / "results").exists()


# ======================================================================================================
# 3: reruns redo exactly the batches that changed
# ======================================================================================================
RERUN_NAMES = [f"motion_{i:02d}" for i in range(12)]


def _motion_to_add(names: list[str], batch_size: int) -> str:
    """A new name that changes some batches and leaves at least two alone, preferring one that splits a batch.

    Only picks the scenario; the test checks what the workflow did against the plan files it wrote.
    """
    from physrec.stages.splitting import plan_batches
    old = plan_batches(names, batch_size)
    fallback = None
    for i in range(200):
        name = f"added_{i:02d}"
        new = plan_batches(names + [name], batch_size)
        unchanged = sum(1 for b in new if old.get(b) == new[b])
        if unchanged >= 2 and len(new) > len(old) and any(b in old for b in new if old.get(b) != new[b]):
            return name  # splits an existing batch: one keeps its id with fewer members, one is new
        fallback = fallback or (name if unchanged >= 2 else None)
    assert fallback, "no name leaves two batches unchanged"
    return fallback


def test_rerun_records_only_changed_batches(tmp_path):
    project = make_project(tmp_path / "rerun", base_config("data/dataset.yaml", batch_size=3))
    demo = demo_motions()
    kinds = [demo["stand_flat"], demo["wave_flat"], demo["stand_step_top"]]
    added = _motion_to_add(RERUN_NAMES, 3)
    entries = []
    for i, name in enumerate(RERUN_NAMES + [added]):
        rel = f"motions/{name}.pkl"
        write_motion_file(project / "data" / rel, _short(kinds[i % 3], 1.0))
        entries.append((rel, 1.0))
    write_dataset(project / "data" / "dataset.yaml", entries[:-1])
    first = snakemake(project)
    old_plan = plan_members(project)
    assert len(old_plan) >= 3, old_plan
    assert jobs_run(first.stdout + first.stderr, "record") == len(old_plan)
    old_mtimes = h5_mtimes(project)
    assert set(old_mtimes) == set(old_plan)
    time.sleep(0.05)  # distinct mtimes even on coarse clocks

    write_dataset(project / "data" / "dataset.yaml", entries)
    second = snakemake(project)
    new_plan = plan_members(project)
    changed = {b for b in new_plan if old_plan.get(b) != new_plan[b]}
    unchanged = set(new_plan) - changed
    assert changed and len(unchanged) >= 2, (old_plan, new_plan)
    assert jobs_run(second.stdout + second.stderr, "record") == len(changed)
    new_mtimes = h5_mtimes(project)
    for b in unchanged:
        assert new_mtimes[b] == old_mtimes[b], f"unchanged batch {b} was re-recorded"
    for b in changed:
        assert b in new_mtimes and new_mtimes[b] != old_mtimes.get(b), f"changed batch {b} was not re-recorded"
    merged = {r["name"]: r for r in read_tsv_records(project / "results" / IT / "manifest.tsv")}
    assert set(merged) == set(RERUN_NAMES + [added])
    assert merged[added]["status"] == "recorded"
    assert all(r["status"] == "recorded" for r in merged.values())
    assert {motion_name(e.path) for e in read_dataset(project / "results" / IT / "dataset.yaml")} == \
           {f"{n}_rec" for n in merged}
    # Nothing left to do.
    dry = snakemake(project, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # A motion file whose content changes (same name): only its batch is recorded again.
    victim_batch = sorted(unchanged)[0]
    victim = new_plan[victim_batch][0]
    time.sleep(0.05)
    write_motion_file(project / "data" / "motions" / f"{victim}.pkl", _short(demo["wave_flat"], 1.2))
    third = snakemake(project)
    assert plan_members(project) == new_plan
    assert jobs_run(third.stdout + third.stderr, "record") == 1
    after = h5_mtimes(project)
    assert after[victim_batch] != new_mtimes[victim_batch]
    assert {b: t for b, t in after.items() if b != victim_batch} == \
           {b: t for b, t in new_mtimes.items() if b != victim_batch}
    rec = read_motion_file(project / "results" / IT / "recorded_motions" / f"{victim}_rec.pkl")
    assert rec.motion.num_frames == 37  # the new 1.2 s content, not the old 1.0 s

    # A motion file removed (its dataset entry stays): index reports it missing, and only the
    # batches whose members changed are recorded again.
    gone_batch = next(b for b in sorted(new_plan) if len(new_plan[b]) >= 2 and b != victim_batch)
    gone = new_plan[gone_batch][0]
    (project / "data" / "motions" / f"{gone}.pkl").unlink()
    fourth = snakemake(project)
    last_plan = plan_members(project)
    changed = {b for b in last_plan if new_plan.get(b) != last_plan[b]}
    assert changed and gone not in {n for members in last_plan.values() for n in members}
    assert jobs_run(fourth.stdout + fourth.stderr, "record") == len(changed)
    final = h5_mtimes(project)
    assert all(final[b] == after[b] for b in last_plan if b not in changed)
    merged = {r["name"]: r for r in read_tsv_records(project / "results" / IT / "manifest.tsv")}
    assert merged[gone]["status"] == "invalid" and "file not found" in merged[gone]["error"], merged[gone]


# ======================================================================================================
# 5, 7: determinism, and a killed record job
# ======================================================================================================
# The demo motions three times over, simulated at 1200 Hz: a record job takes a few seconds, long
# enough to be killed while it runs.
SLOW = {"physics_hz": 1200}


def _det_project(path: Path, results: str) -> Path:
    project = make_project(path, {**base_config("data/dataset.yaml", record=SLOW), "results_dir": results})
    write_demo_copies(project / "data", copies=2)
    return project


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    project = _det_project(tmp_path_factory.mktemp("wf") / "clean", "results")
    snakemake(project)
    return project


def _files(project: Path, results: str, pattern: str) -> dict[str, bytes]:
    base = project / results / IT
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.glob(pattern))}


def test_two_runs_give_identical_outputs(clean_run, tmp_path):
    other = _det_project(tmp_path / "elsewhere" / "project", "out/results_b")
    snakemake(other)
    a, b = clean_run, other
    summary = json.loads((a / "results" / IT / "summary.json").read_text())
    assert summary["motions"]["valid"] == 18 and summary["motions"]["recorded"] >= 3
    for pattern in ("recorded_motions/*.pkl", "select/*/selected.tsv", "dataset/manifest.tsv", "batches/plan.tsv",
                    "record/*/rollouts.h5", "record/*/attempts.tsv", "record/*/rollouts.json",
                    "record/*/terrain.pkl", "summary.json"):
        fa, fb = _files(a, "results", pattern), _files(b, "out/results_b", pattern)
        assert fa, pattern
        assert fa.keys() == fb.keys(), pattern
        for k in fa:
            assert fa[k] == fb[k], f"{k} differs between two runs"
    # The merged manifest names where the recorded files are, so only its results folder may differ.
    ma = (a / "results" / IT / "manifest.tsv").read_text()
    mb = (b / "out/results_b" / IT / "manifest.tsv").read_text()
    assert "out/results_b/" in mb
    assert mb.replace("out/results_b/", "results/") == ma


def test_killed_record_job_leaves_nothing_trusted(clean_run, tmp_path):
    project = _det_project(tmp_path / "killed", "results")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = open(project / "killed_run.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", CONFIG],
                            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    record_logs = project / "logs" / IT / "record"
    try:
        deadline = time.monotonic() + 120
        # Wait until a record job has loaded its batch and started simulating (its log says "recording").
        while not (record_logs.is_dir() and any("recording" in p.read_text() for p in record_logs.glob("*.log"))):
            assert proc.poll() is None, "snakemake ended before any record job started:\n" + \
                (project / "killed_run.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no record job started within 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out.close()
    started = sorted(p.stem for p in record_logs.glob("*.log"))
    res = project / "results" / IT
    for b in started:
        assert not (res / "record" / b / "rollouts.json").exists(), \
            f"record job {b} finished before it was killed; make it slower"
        assert not (res / "select" / b / "selected.tsv").exists()
    # Every process of the killed run is gone before the rerun.
    for _ in range(200):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)

    # Snakemake will not trust what the killed job left: it plans to run it again.
    dry = snakemake(project, "-n", check=False)
    text = dry.stdout + dry.stderr
    if dry.returncode == 0:
        assert job_counts(text).get("record", 0) >= len(started), text[-3000:]
    else:
        assert "incomplete" in text.lower(), text[-3000:]
    dry = snakemake(project, "-n", "--rerun-incomplete")
    assert job_counts(dry.stdout + dry.stderr).get("record", 0) >= len(started), dry.stdout[-3000:]

    snakemake(project, "--unlock")
    snakemake(project, "--rerun-incomplete")
    for pattern in ("select/*/selected.tsv", "record/*/rollouts.h5", "recorded_motions/*.pkl"):
        fa, fb = _files(clean_run, "results", pattern), _files(project, "results", pattern)
        assert fa.keys() == fb.keys(), pattern
        for k in fa:
            assert fa[k] == fb[k], f"{k}: rerun after the kill differs from a clean run"
    assert not list((project / "results").rglob(".*.tmp")), "a killed job's temporary file is still there"


def _tree(project: Path) -> dict[str, int]:
    """Every file under the project's results with its size: what a preview must leave alone."""
    return {str(p.relative_to(project)): p.stat().st_size for p in sorted((project / "results").rglob("*"))
            if p.is_file()}


def test_a_deleted_or_changed_output_is_made_again(clean_run, tmp_path):
    """Deleted: the batch's rollouts.h5 and a recorded motion, then a selected motion, then the
    batch's selected.tsv; changed: another recorded motion, rollouts.h5 cut short, rollouts.h5
    edited but readable (states raised by 0.5 m), an episode removed from rollouts.json. A dry
    run, --report and --unlock show or ignore the damage and delete nothing; each real rerun says
    what it makes again and why, every file comes back byte-identical to a clean run, and a
    further rerun does nothing."""
    project = tmp_path / "deleted"
    shutil.copytree(clean_run, project, symlinks=True)  # time stamps and Snakemake's records kept
    res = project / "results" / IT
    batch = sorted(plan_members(project))[0]
    record, select = res / "record" / batch, res / "select" / batch
    kept = [r["recorded_file"] for r in read_tsv_records(select / "selected.tsv") if r["recorded_file"]]
    recorded = sorted((res / "recorded_motions").glob("*.pkl"))
    assert len(kept) >= 2 and len(recorded) >= 2

    def rerun_and_compare(*said: str, records: int = 0) -> None:
        before = _tree(project)
        dry = snakemake(project, "-n")
        assert job_counts(dry.stdout + dry.stderr).get("record", 0) == records, dry.stdout[-3000:]
        snakemake(project, "--report", str(tmp_path / "report.html"), check=False)
        snakemake(project, "--unlock")
        assert _tree(project) == before, "a dry run, --report or --unlock changed the results"
        r = snakemake(project)
        for text in said:
            assert text in r.stderr, (text, r.stderr[-3000:])
        assert jobs_run(r.stdout + r.stderr, "record") == records
        for pattern in ("select/*/selected.tsv", "select/*/motions/*.pkl", "record/*/rollouts.h5",
                        "record/*/rollouts.json", "recorded_motions/*.pkl", "manifest.tsv"):
            fa, fb = _files(clean_run, "results", pattern), _files(project, "results", pattern)
            assert fa.keys() == fb.keys(), pattern
            for k in fa:
                assert fa[k] == fb[k], f"{k}: made again differs from a clean run"
        for e in read_dataset(res / "dataset.yaml"):  # merged again here, so naming this project's files
            assert Path(e.path).is_relative_to(res) and Path(e.path).is_file(), e.path
        assert "Nothing to be done" in snakemake(project, "-n").stdout

    h5 = record / "rollouts.h5"
    h5.unlink()
    recorded[0].unlink()
    recorded[-1].write_bytes(recorded[-1].read_bytes()[:-1] + b"x")
    rerun_and_compare(f"{h5.relative_to(project)} is missing; record {IT}/{batch} runs again",
                      "(and 1 more file(s)); merge iter0 runs again",
                      records=1)
    (select / "motions" / kept[0]).unlink()
    rerun_and_compare(f"{kept[0]} is missing; select {IT}/{batch} runs again")
    (select / "selected.tsv").unlink()
    rerun_and_compare("selected.tsv is missing")
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])  # a copy cut short
    rerun_and_compare(f"{h5.relative_to(project)} changed since integrity.txt recorded it", records=1)
    with h5py.File(h5, "r+") as f:  # readable, and wrong: every state raised by 0.5 m
        for g in f.values():
            g["env_states/qpos"][:, 2] += 0.5
    rerun_and_compare(f"{h5.relative_to(project)} changed since integrity.txt recorded it", records=1)
    info = json.loads((record / "rollouts.json").read_text())
    info["episodes"].pop(0)
    (record / "rollouts.json").write_text(json.dumps(info))
    rerun_and_compare("rollouts.json changed since integrity.txt recorded it", records=1)


def test_select_refuses_a_changed_recording_even_with_its_old_time_stamp(clean_run, tmp_path):
    """An edit that keeps the file's time stamp escapes the DAG's cheap check; select hashes what it
    reads, refuses it with a message, and marks it so that the next run records the batch again."""
    project = tmp_path / "stamped"
    shutil.copytree(clean_run, project, symlinks=True)
    res = project / "results" / IT
    batch = sorted(plan_members(project))[0]
    h5 = res / "record" / batch / "rollouts.h5"
    st = h5.stat()
    with h5py.File(h5, "r+") as f:
        for g in f.values():
            g["env_states/qpos"][:, 2] += 0.5
    os.utime(h5, ns=(st.st_atime_ns, st.st_mtime_ns))
    (res / "select" / batch / "selected.tsv").unlink()  # so that select runs
    r = snakemake(project, check=False)
    assert r.returncode != 0
    log = (project / "logs" / IT / "select" / f"{batch}.log").read_text()
    assert f"{h5.relative_to(project)}: changed since the record job wrote it" in log, log
    assert "run the workflow again: it records batch" in log
    r = snakemake(project)
    assert jobs_run(r.stdout + r.stderr, "record") == 1
    for pattern in ("record/*/rollouts.h5", "recorded_motions/*.pkl"):
        fa, fb = _files(clean_run, "results", pattern), _files(project, "results", pattern)
        assert fa == fb, pattern


# ======================================================================================================
# 6: bad input motions
# ======================================================================================================
def test_bad_inputs_do_not_stop_the_run(tmp_path):
    """The corpus of bad inputs (bad_motions.py, docs/bad_inputs.md) in one dataset beside good motions,
    through the real workflow: each bad input gets its invalid row and message, every good motion is
    recorded and merged, and the base dataset's motions stay in the next dataset with their weights."""
    cfg = base_config("data/dataset.yaml", limits=CORPUS_LIMITS, record={"max_duration_s": CORPUS_MAX_DURATION_S})
    cfg["iterations"][0]["base_dataset"] = "earlier/dataset.yaml"
    project = make_project(tmp_path / "bad", cfg)
    marker = tmp_path / "PWNED"
    build_corpus(project / "data", marker)
    for name in ("kept_a", "kept_b"):
        write_motion_file(project / "earlier" / f"{name}_rec.pkl", demo_motions()["stand_flat"])
    write_dataset(project / "earlier" / "dataset.yaml", [("kept_a_rec.pkl", 2.5), ("kept_b_rec.pkl", 0.5)])
    snakemake(project)  # exits 0
    assert not marker.exists() and not list(project.rglob("PWNED")), "an input ran code"
    res = project / "results" / IT
    summary = json.loads((res / "summary.json").read_text())
    good = [c for c in CORPUS if c.valid]
    assert summary["motions"]["invalid"] == len(CORPUS) - len(good)
    assert summary["motions"]["valid"] == summary["motions"]["recorded"] == len(good)
    rows = read_tsv_records(res / "manifest.tsv")
    assert len(rows) == len(CORPUS)
    for case, r in zip(CORPUS, rows):
        assert r["source_path"].endswith(one_line(case.rel, None)), (case.key, r["source_path"])
        if not case.valid:
            assert r["status"] == "invalid" and case.expect in r["error"] and one_line(case.rel) in r["error"], r
            continue
        assert r["status"] == "recorded", (case.key, r)
        # A recording never lasts longer than its source, nor weighs more.
        assert float(r["recorded_duration"]) <= float(r["source_duration"]) + 1e-9, (case.key, r)
        assert float(r["weight"]) <= 1.0, (case.key, r)
        assert (project / r["recorded_path"]).is_file()
    long = next(r for c, r in zip(CORPUS, rows) if c.key == "long_name")
    assert "~" in long["recorded_path"] and len(os.fsencode(Path(long["recorded_path"]).name)) <= 255
    fps31 = next(r for c, r in zip(CORPUS, rows) if c.key == "fps31")
    assert float(fps31["recorded_duration"]) == pytest.approx(69 / 30)  # 72/31 s: 69 control steps fit
    entries = read_dataset(res / "dataset.yaml")
    assert [(e.path.name, e.weight) for e in entries[:2]] == [("kept_a_rec.pkl", 2.5), ("kept_b_rec.pkl", 0.5)]
    assert len(entries) == 2 + len(good) and all(e.path.is_file() for e in entries)
    # The index log says which motions are invalid and why, one line each.
    log = (project / "logs" / IT / "index.log").read_text()
    assert "invalid motion nan_frame" in log and "invalid motion tab\\tname" in log


def test_dataset_with_no_valid_motion_still_completes(tmp_path):
    project = make_project(tmp_path / "allbad", base_config("data/dataset.yaml"))
    (project / "data").mkdir()
    (project / "data" / "trunc.pkl").write_bytes(b"\x80\x04garbage")
    write_dataset(project / "data" / "dataset.yaml", [("missing.pkl", 1.0), ("trunc.pkl", 1.0)])
    snakemake(project)
    res = project / "results" / IT
    summary = json.loads((res / "summary.json").read_text())
    assert summary["motions"]["invalid"] == 2 and summary["motions"]["valid"] == 0
    assert read_tsv_records(res / "batches" / "plan.tsv") == []
    assert read_dataset(res / "dataset.yaml") == []
    assert not list((res / "recorded_motions").glob("*.pkl"))


# ======================================================================================================
# Iterations chain: iteration k's merged dataset is the base of iteration k+1's
# ======================================================================================================
def test_iterations_chain(tmp_path):
    cfg = base_config("builtin:demo")
    cfg["iterations"].append({"name": "iter1", "dataset": "new/dataset.yaml", "tracker": {"kind": "pd"}})
    project = make_project(tmp_path / "chain", cfg)
    demo = demo_motions()
    write_motion_file(project / "new" / "stand_again.pkl", _short(demo["stand_flat"], 1.0))
    write_motion_file(project / "new" / "stand_flat.pkl", _short(demo["stand_flat"], 1.0))  # name of an iter0 motion
    write_dataset(project / "new" / "dataset.yaml", [("stand_again.pkl", 2.0), ("stand_flat.pkl", 1.0)])
    snakemake(project)
    it0 = read_dataset(project / "results" / IT / "dataset.yaml")
    it1 = read_dataset(project / "results" / "iter1" / "dataset.yaml")
    assert it0 and [e.path for e in it1[:len(it0)]] == [e.path for e in it0]
    assert [e.weight for e in it1[:len(it0)]] == [e.weight for e in it0]
    assert [motion_name(e.path) for e in it1[len(it0):]] == ["stand_again_rec"]
    assert it1[-1].weight == pytest.approx(2.0)
    rows = {r["name"]: r for r in read_tsv_records(project / "results" / "iter1" / "manifest.tsv")}
    assert rows["stand_again"]["status"] == "recorded"
    # Recording it again would shadow iteration 0's stand_flat_rec: reported, not written into the dataset.
    assert rows["stand_flat"]["status"] == "name_clash" and "stand_flat_rec" in rows["stand_flat"]["error"]
    # The run summary: one row per iteration, in config order, with what each handed on.
    run = read_tsv_records(project / "results" / "run_summary.tsv")
    assert [r["iteration"] for r in run] == [IT, "iter1"] and [r["tracker"] for r in run] == ["pd", "pd"]
    count = [{k: int(r[k]) for k in ("motions", "recorded", "next_dataset_entries", "next_dataset_from_base")}
             for r in run]
    assert count[0] == {"motions": 6, "recorded": len(it0), "next_dataset_entries": len(it0), "next_dataset_from_base": 0}
    assert count[1] == {"motions": 2, "recorded": 1, "next_dataset_entries": len(it1), "next_dataset_from_base": len(it0)}
    md = (project / "results" / "run_summary.md").read_text()
    assert "| iter1 | pd | 2 (2) | 1 (50% of valid) |" in md and f"{len(it1)} ({len(it0)} + 1)" in md
    from PIL import Image
    with Image.open(project / "results" / "run_summary.png") as plot:  # its plot, for the report
        assert plot.format == "PNG" and plot.size[0] > 600
    # Another config sharing results/: its run summary keeps the iterations it finds there.
    other = base_config("new/dataset.yaml")
    other["iterations"][0]["name"] = "solo"
    write_config(project, other)
    snakemake(project)
    run = read_tsv_records(project / "results" / "run_summary.tsv")
    assert [(r["iteration"], r["tracker"]) for r in run] == [("solo", "pd"), (IT, "pd"), ("iter1", "pd")]
    assert "from another config: iter0, iter1." in (project / "results" / "run_summary.md").read_text()


def planned(output: str) -> dict[tuple[str, str], int]:
    """(rule, iteration) -> jobs that a dry run's printout plans (checkpoints included)."""
    jobs: dict[tuple[str, str], int] = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?(?:rule|checkpoint) )", output):
        m = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        it = re.search(r"^\s+wildcards: .*?\bit=([\w.-]+)", block, re.M)
        if m and it:
            jobs[(m.group(1), it.group(1))] = jobs.get((m.group(1), it.group(1)), 0) + 1
    return jobs


def test_a_change_reruns_its_iteration_and_what_follows_only(tmp_path):
    """Iteration k+1 merges onto iteration k's dataset: adding an iteration runs only it;
    a new model for iteration k re-records k and re-merges k+1, and leaves k-1 alone."""
    import torch
    from first_target_policy import FirstTargetFrame
    from physrec.motion.character import Character
    project = tmp_path / "chain"
    project.mkdir()

    class Damped(FirstTargetFrame):
        def forward(self, obs):
            return 0.9 * super().forward(obs)

    def export(path, module):
        n = torch.export.Dim("n", min=1)
        torch.export.save(torch.export.export(module(Character.load()), (torch.zeros(2, 1312),),
                                              dynamic_shapes={"obs": {0: n}}), path)
    export(project / "policy.pt2", FirstTargetFrame)
    demo = demo_motions()
    write_motion_file(project / "new" / "stand_again.pkl", _short(demo["stand_flat"], 1.0))
    write_dataset(project / "new" / "dataset.yaml", [("stand_again.pkl", 1.0)])
    cfg = base_config("builtin:demo")
    cfg["iterations"].append({"name": "iter1", "dataset": "new/dataset.yaml",
                              "tracker": {"kind": "exported", "model": "policy.pt2", "observation": "parc"}})
    make_project(project, cfg)
    snakemake(project)
    # A further iteration: only its own jobs run.
    write_motion_file(project / "newer" / "wave_again.pkl", _short(demo["wave_flat"], 1.0))
    write_dataset(project / "newer" / "dataset.yaml", [("wave_again.pkl", 1.0)])
    cfg["iterations"].append({"name": "iter2", "dataset": "newer/dataset.yaml", "tracker": {"kind": "pd"}})
    write_config(project, cfg)
    jobs = planned(snakemake(project, "-n").stdout)
    assert jobs and {it for _, it in jobs} == {"iter2"}, jobs
    snakemake(project)
    # The same model written again (same bytes) changes nothing.
    export(project / "policy.pt2", FirstTargetFrame)
    assert not planned(snakemake(project, "-n").stdout)
    # A new model for iter1: iter1 is recorded again, iter2 merged again onto it, iter0 untouched.
    export(project / "policy.pt2", Damped)
    jobs = planned(snakemake(project, "-n").stdout)
    assert jobs.get(("record", "iter1")) == 1 and jobs.get(("merge", "iter2")) == 1, jobs
    assert not any(it == "iter0" for _, it in jobs), jobs
    assert not jobs.get(("record", "iter2")), jobs


def test_a_failed_recording_is_not_shadowed_by_older_results(tmp_path):
    """A record job that fails leaves no outputs; the iteration's older merged results must not
    then pass for up to date (Snakemake does not rerun a job only because an input it made is
    missing): select and merge carry the recording's identity, so the next run records again."""
    project = make_project(tmp_path / "failing", base_config("builtin:demo"))
    snakemake(project)
    (project / "model.pt").write_bytes(b"not a checkpoint")
    cfg = base_config("builtin:demo")
    cfg["iterations"][0]["tracker"] = {"kind": "parc", "model": "model.pt"}
    write_config(project, cfg)
    r = snakemake(project, check=False)
    assert r.returncode != 0 and "not a readable PyTorch file" in (r.stdout + r.stderr)
    assert not list((project / "results" / IT / "record").glob("*/attempts.tsv"))
    jobs = planned(snakemake(project, "-n").stdout)
    assert jobs.get(("record", IT)) == 1 and jobs.get(("merge", IT)) == 1, jobs


# ======================================================================================================
# Several GPUs on one workstation: --resources gpu=N runs N record jobs at once, each on its own device
# ======================================================================================================
STANDIN_GPUS = ["0000:01:00.0", "0000:41:00.0"]


def _gpu_holds(project: Path) -> dict[str, tuple[str, float, float]]:
    """(device, from, to) per record job: its device (record_env.yaml), from when it claimed it
    (its log) to when it wrote rollouts.json, all within the time it held the device's lock."""
    out = {}
    for env in (project / "results" / IT / "record").glob("*/record_env.yaml"):
        info = yaml.safe_load(env.read_text())
        log = (project / "logs" / IT / "record" / f"{env.parent.name}.log").read_text()
        claimed = re.search(r"claimed \(device \d+ of \d+\) at Unix time ([0-9.]+)", log)
        written = (env.parent / "rollouts.json").stat().st_mtime
        out[env.parent.name] = (info.get("gpu"), float(claimed.group(1)) if claimed else None, written)
    return out


def test_each_gpu_job_gets_a_device_of_its_own(tmp_path, monkeypatch):
    """`snakemake --cores 4 --resources gpu=2`: two record jobs at a time, never three (4 cores
    would allow 4 single-threaded ones), and two that run together hold different devices.
    The config is a GPU one (`backend: mujoco_warp`, `device: cuda`, so each record job declares
    gpu=1); the tests' standin_gpu/ on the PYTHONPATH makes its jobs run CPU MuJoCo that claims
    one of two stand-in devices as a GPU job claims its GPU, names it in record_env.yaml and
    says when it took it in its log. A third job at once would have to wait for a device,
    which its log would say."""
    monkeypatch.setenv("PHYSREC_TEST_STANDIN_GPUS", ",".join(STANDIN_GPUS))
    monkeypatch.setenv("PHYSREC_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests" / "standin_gpu"),
                                                                    os.environ.get("PYTHONPATH")])))
    project = make_project(tmp_path / "gpus", base_config("data/dataset.yaml", batch_size=4, record=SLOW,
                                                          backend="mujoco_warp", device="cuda"))
    write_demo_copies(project / "data", copies=3)
    snakemake(project, "--until", "split")
    batches = plan_members(project)
    assert len(batches) >= 4, batches
    dry = snakemake(project, "-n", "--cores", "4", "--resources", "gpu=2").stdout
    assert dry.count("gpu=1") >= len(batches), dry[-3000:]  # every record job declares one GPU
    snakemake(project, "--cores", "4", "--resources", "gpu=2")
    holds = _gpu_holds(project)
    assert sorted(holds) == sorted(batches)
    assert {g for g, _, _ in holds.values()} <= set(STANDIN_GPUS), holds
    assert all(isinstance(t, float) and t < end for _, t, end in holds.values()), holds
    overlapping = [(a, b) for a in holds for b in holds
                   if a < b and min(holds[a][2], holds[b][2]) > max(holds[a][1], holds[b][1])]
    assert overlapping, f"no two record jobs held a device at once: {holds}"
    for a, b in overlapping:
        assert holds[a][0] != holds[b][0], f"record jobs {a} and {b} held the same device {holds[a][0]} at once"
    # Never a third at once: it would have found both devices held and waited, saying so.
    for log in (project / "logs" / IT / "record").glob("*.log"):
        assert "held by other physrec jobs" not in log.read_text(), f"{log.name}: a job waited for a device"


# ======================================================================================================
# The rerun matrix (docs/reruns.md, "What reruns when"): the rows no test above proves
# ======================================================================================================
def planned_batches(output: str, rule: str) -> set[str]:
    """Batches of the `rule` jobs that a dry run's printout plans."""
    found = set()
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?(?:rule|checkpoint) )", output):
        if re.search(rf"^(?:local)?rule {rule}:", block, re.MULTILINE):
            m = re.search(r"^\s+wildcards: .*?\bbatch=(b[0-9a-f]+)", block, re.MULTILINE)
            if m:
                found.add(m.group(1))
    return found


def matrix_config() -> dict:
    """The demo in batches of 2, with the iteration's one trajectory file."""
    return base_config("builtin:demo", batch_size=2, record={"merged_trajectories": True})


@pytest.fixture(scope="module")
def matrix_project(tmp_path_factory):
    """The demo in batches of 2 (several batches), recorded once."""
    project = make_project(tmp_path_factory.mktemp("wf") / "matrix", matrix_config())
    snakemake(project)
    assert len(plan_members(project)) >= 3
    return project


def _top(info: dict) -> dict:
    """A trajectory JSON but its episodes: what ManiSkill's merge keeps one value of."""
    return {k: v for k, v in info.items() if k != "episodes"}


def _h5_arrays(g: h5py.Group) -> dict[str, tuple]:
    out = {}
    g.visititems(lambda name, obj: out.__setitem__(name, (obj.dtype, obj.shape, obj[()].tobytes(), dict(obj.attrs)))
                 if isinstance(obj, h5py.Dataset) else None)
    return out


def test_trajectory_files_of_several_batches_merge_without_loss(matrix_project, tmp_path):
    """Every batch's rollouts.h5/.json has ManiSkill's layout and the same env_info, so ManiSkill's
    merge (emulated: maniskill_layout) finds no conflict; the iteration's trajectories.h5 holds
    every episode of every batch, renumbered, with bit-identical arrays and its provenance."""
    project = matrix_project
    res = project / "results" / IT
    batches = batch_ids(res / "batches" / "plan.tsv")  # in the merge's order
    assert sorted(batches) == sorted(plan_members(project))
    h5s = [res / "record" / b / "rollouts.h5" for b in batches]
    infos = [check_layout(p) for p in h5s]
    assert all(_top(i) == _top(infos[0]) for i in infos), "rollouts.json differs between batches outside its episodes"
    longest = max(ep["elapsed_steps"] for i in infos for ep in i["episodes"])
    assert infos[0]["env_info"]["max_episode_steps"] == 30000 > longest  # record.max_duration_s 1000 s at 30 Hz
    for b, info in zip(batches, infos):
        assert {ep["batch"] for ep in info["episodes"]} == {b}
    assert maniskill_merge(h5s, tmp_path / "maniskill.h5") == []
    merged = check_layout(res / "trajectories.h5")
    assert maniskill_load(res / "trajectories.h5") == sum(ep["elapsed_steps"] for ep in merged["episodes"])
    assert _top(merged) == _top(infos[0])
    n = 0
    with h5py.File(res / "trajectories.h5") as m:
        for b, info in zip(batches, infos):
            with h5py.File(res / "record" / b / "rollouts.h5") as f:
                for own in info["episodes"]:
                    assert merged["episodes"][n] == {"episode_id": n, "batch_episode_id": own["episode_id"],
                                                     **{k: v for k, v in own.items() if k != "episode_id"},
                                                     "terrain_file": f"record/{b}/terrain.pkl"}
                    assert _h5_arrays(m[f"traj_{n}"]) == _h5_arrays(f[f"traj_{own['episode_id']}"]), n
                    n += 1
    assert n == len(merged["episodes"])


def _copy(project: Path, dest: Path) -> Path:
    shutil.copytree(project, dest, symlinks=True)
    return dest


def test_rerun_matrix_rows_in_a_dry_run(matrix_project, tmp_path):
    """Each change, on its own, against the recorded demo: the jobs a dry run plans."""
    project = _copy(matrix_project, tmp_path / "m")
    n = len(plan_members(project))
    base = matrix_config()
    every_batch = {("record", IT): n, ("select", IT): n, ("merge", IT): 1, ("plots", IT): 1}
    merge_only = {("merge", IT): 1, ("plots", IT): 1}
    (project / "base.yaml").write_text("motions: []\n")
    cases = [
        ("merge.recorded_weight_scale", {"merge": {"recorded_weight_scale": 0.5}}, merge_only),
        ("base_dataset", {"iterations": [{**base["iterations"][0], "base_dataset": "base.yaml"}]},
         merge_only),
        ("record.termination", {"record": {**base["record"], "termination": {"root_pos_error_m": 0.5}}}, every_batch),
        ("record.start_fractions", {"record": {**base["record"], "start_fractions": [0.5]}}, every_batch),
        ("seed", {"seed": 1}, every_batch),
        ("device without mujoco_warp", {"device": "cuda:1"}, {}),
        ("record.threads", {"record": {**base["record"], "threads": 2}}, {}),
        ("record.merged_trajectories", {"record": {**base["record"], "merged_trajectories": False}}, merge_only),
        # Videos: report.max_videos spread over the batches, one each for the first two here.
        ("report.videos", {"report": {"videos": "kept", "max_videos": 2}}, {("videos", IT): 2}),
    ]
    for what, change, expected in cases:
        write_config(project, {**base, **change})
        out = snakemake(project, "-n").stdout
        assert planned(out) == expected, (what, planned(out), out[-3000:])
    write_config(project, base)
    # record.min_frames and max_duration_s are checked by index: index (and split) first, then every batch.
    for key, value in (("min_frames", 3), ("max_duration_s", 60.0)):
        write_config(project, {**base, "record": {**base["record"], key: value}})
        assert {("index", IT), ("split", IT)} <= set(planned(snakemake(project, "-n").stdout)), key
    write_config(project, base)
    # A profile changes how jobs run, not what they make.
    out = snakemake(project, "-n", "--profile", str(REPO / "workflow" / "profiles" / "workstation")).stdout
    assert "Nothing to be done" in out, out[-3000:]
    # The dataset YAML rewritten with the same bytes: nothing.
    dataset = project / "results" / "builtin_demo" / "dataset.yaml"
    dataset.write_bytes(dataset.read_bytes())
    assert "Nothing to be done" in snakemake(project, "-n").stdout
    # An iteration's new name is a new folder: only its jobs, nothing of the old name's.
    write_config(project, {**base, "iterations": [{**base["iterations"][0], "name": "renamed"}]})
    jobs = planned(snakemake(project, "-n").stdout)
    assert ("index", "renamed") in jobs and {it for _, it in jobs} == {"renamed"}, jobs
    # device with mujoco_warp: every batch. (MuJoCo Warp is not needed here: --touch marks the
    # recorded outputs as made with device cpu, so the dry run compares device against device.)
    warp = {**base, "backend": "mujoco_warp", "device": "cpu"}
    write_config(project, warp)
    assert planned(snakemake(project, "-n").stdout) == every_batch
    snakemake(project, "--touch")
    assert "Nothing to be done" in snakemake(project, "-n").stdout
    write_config(project, {**warp, "device": "cuda:0"})
    assert planned(snakemake(project, "-n").stdout) == every_batch


def test_the_merged_trajectory_file_follows_the_config(matrix_project, tmp_path):
    """record.merged_trajectories off: merge runs again (nothing is recorded) and removes the file it
    no longer tracks; on again: the same bytes as before."""
    project = _copy(matrix_project, tmp_path / "mt")
    res = project / "results" / IT
    before = {name: (res / name).read_bytes() for name in ("trajectories.h5", "trajectories.json")}
    cfg = matrix_config()
    write_config(project, {**cfg, "record": {**cfg["record"], "merged_trajectories": False}})
    r = snakemake(project)
    text = r.stdout + r.stderr
    assert jobs_run(text, "merge") == 1 and jobs_run(text, "record") == 0, text[-3000:]
    assert not any(res.glob("trajectories.*")) and not any(res.glob(".trajectories*"))
    write_config(project, cfg)
    r = snakemake(project)
    assert jobs_run(r.stdout + r.stderr, "merge") == 1
    assert {name: (res / name).read_bytes() for name in before} == before


def test_the_recovery_mode_reruns_what_it_must_and_nothing_else(matrix_project, tmp_path):
    """record.recovery: segments simulates other attempts: record, select and merge for every batch.
    Then selection.segment_margin_s reruns select and merge only; back to parc, every batch again,
    and PARC's recording comes back byte for byte. Under parc the segment keys change nothing."""
    project = _copy(matrix_project, tmp_path / "rec")
    res = project / "results" / IT
    parc_files = sorted(res.glob("record/*/*.h5")) + sorted(res.glob("select/*/motions/*.pkl")) + [res / "manifest.tsv"]
    before = {p: p.read_bytes() for p in parc_files}
    n = len(plan_members(project))
    every_batch = {("record", IT): n, ("select", IT): n, ("merge", IT): 1, ("plots", IT): 1}
    cfg = matrix_config()
    parc_with_segment_keys = {**cfg, "record": {**cfg["record"], "min_segment_s": 0.5, "max_restarts": 3},
                              "selection": {"segment_margin_s": 0.2}}
    write_config(project, parc_with_segment_keys)
    assert "Nothing to be done" in snakemake(project, "-n").stdout
    segments = {**cfg, "record": {**cfg["record"], "recovery": "segments"}}
    write_config(project, segments)
    assert planned(snakemake(project, "-n").stdout) == every_batch
    r = snakemake(project)
    assert jobs_run(r.stdout + r.stderr, "record") == n
    kept = read_tsv_records(res / "manifest.tsv")
    assert {m["name"] for m in kept if m["status"] == "recorded_segment"} == {"climb_step", "ramp_descent_then_stand"}
    write_config(project, {**segments, "selection": {"segment_margin_s": 0.2}})
    assert planned(snakemake(project, "-n").stdout) == {("select", IT): n, ("merge", IT): 1, ("plots", IT): 1}
    write_config(project, cfg)
    assert planned(snakemake(project, "-n").stdout) == every_batch
    snakemake(project)
    assert {p: p.read_bytes() for p in parc_files} == before
    assert not list(res.glob("recorded_motions/*ms_rec.pkl"))  # merge left no segment of the other mode


def test_a_new_batch_size_rerecords_exactly_the_batches_whose_members_changed(matrix_project, tmp_path):
    project = _copy(matrix_project, tmp_path / "bs")
    old_plan, old_mtimes = plan_members(project), h5_mtimes(project)
    write_config(project, {**matrix_config(), "batch_size": 1})  # one demo batch of 2 splits in two
    dry = snakemake(project, "-n")
    assert ("split", IT) in planned(dry.stdout) and ("index", IT) not in planned(dry.stdout), dry.stdout[-3000:]
    snakemake(project, "--until", "split")
    new_plan = plan_members(project)
    changed = {b for b in new_plan if old_plan.get(b) != new_plan[b]}
    assert changed and len(changed) < len(new_plan), (old_plan, new_plan)
    dry = snakemake(project, "-n").stdout
    assert planned_batches(dry, "record") == changed, (old_plan, new_plan, dry[-3000:])
    snakemake(project)
    assert {b: t for b, t in h5_mtimes(project).items() if b in new_plan and b not in changed} == \
           {b: old_mtimes[b] for b in new_plan if b not in changed}


def test_with_batch_size_auto_the_backend_decides_the_batch_size(tmp_path):
    """batch_size: auto is 64 on the CPU and 4096 on the GPU: a new backend re-splits; with a
    number it does not (the backend alone then reruns record, not split)."""
    project = make_project(tmp_path / "auto", base_config("builtin:demo", batch_size="auto"))
    snakemake(project, "--until", "split")
    gpu = base_config("builtin:demo", batch_size="auto", backend="mujoco_warp", device="cpu")
    write_config(project, gpu)
    out = snakemake(project, "-n", "--until", "split").stdout
    assert re.search(r"checkpoint split:(?:\n\s+.*)*?\n\s+reason: Params have changed.*before: 64 now: 4096", out), \
        out[-3000:]
    project = make_project(tmp_path / "fixed", base_config("builtin:demo", batch_size=16))
    snakemake(project, "--until", "split")
    write_config(project, base_config("builtin:demo", batch_size=16, backend="mujoco_warp", device="cpu"))
    out = snakemake(project, "-n", "--until", "split").stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_a_new_results_dir_runs_everything_there_and_leaves_the_old_one(matrix_project, tmp_path):
    project = _copy(matrix_project, tmp_path / "rd")
    before = {p: p.stat().st_mtime_ns for p in (project / "results").rglob("*") if p.is_file()}
    write_config(project, {**matrix_config(), "results_dir": "elsewhere"})
    r = snakemake(project)
    text = r.stdout + r.stderr
    n = len(plan_members(project, "elsewhere"))
    assert n == len(plan_members(project))
    for rule, count in (("demo_dataset", 1), ("index", 1), ("split", 1), ("record", n), ("select", n), ("merge", 1),
                        ("plots", 1), ("run_summary", 1)):
        assert jobs_run(text, rule) == count, (rule, text[-3000:])
    assert {p: p.stat().st_mtime_ns for p in (project / "results").rglob("*") if p.is_file()} == before
    assert (project / "elsewhere" / IT / "summary.json").read_bytes() == \
           (project / "results" / IT / "summary.json").read_bytes()
