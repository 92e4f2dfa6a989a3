"""`physrec render`: an MP4 per attempt, the simulated character beside its reference (EGL, headless)."""

import json
import os
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest

from test_replay import _record


def _render(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}  # as a user runs it: render picks EGL
    return subprocess.run([sys.executable, "-m", "physrec", "render", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _frames(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def test_render_writes_a_video_of_every_frame_of_an_attempt(tmp_path):
    record = _record(tmp_path, {"kind": "pd"}, ("ramp_descent_then_stand",))
    r = _render("--record-dir", str(record), "--which", "all", "--out-dir", str(tmp_path / "videos"),
                "--width", "160", "--height", "96")
    if r.returncode and "no headless OpenGL" in r.stderr:
        pytest.skip(f"no headless OpenGL on this machine: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    import h5py
    with h5py.File(record / "rollouts.h5") as f:
        frames = {name: len(f[name]["env_states/qpos"]) for name in f}
    assert sorted(p.stem for p in (tmp_path / "videos").glob("*.mp4")) == sorted(frames)
    meta, video = _frames(tmp_path / "videos" / "traj_0.mp4")
    assert meta["fps"] == 30 and meta["size"] == (160, 96) and len(video) == frames["traj_0"]
    body = np.stack(video)[:, 20:]  # below the caption bar
    assert body.mean() > 10  # character, reference and terrain drawn, not a black frame
    assert np.abs(body[-1].astype(int) - body[0].astype(int)).mean() > 1  # the attempt moves (a fall)


def test_render_names_a_missing_attempt(tmp_path):
    record = _record(tmp_path, {"kind": "pd"}, ("stand_flat",))
    r = _render("--record-dir", str(record), "--attempt", "traj_9", "--out-dir", str(tmp_path / "v"))
    assert r.returncode == 1 and "no attempt traj_9" in r.stderr


def test_batch_videos_pick_the_kept_attempt_and_a_failed_motion_from_its_start(tmp_path):
    """report.videos: the kept motion's video is of the attempt selection kept (a later start for
    the ramp); a failed motion's is of its attempt from the start; a batch's quota (report.max_videos) caps each kind."""
    from physrec import config
    from physrec.render.batch_videos import videos_to_render
    from physrec.stages.select import run_select
    record = _record(tmp_path, {"kind": "pd"}, ("ramp_descent_then_stand", "glide_up_step", "stand_flat"))
    rows = run_select(record, config.validate({"iterations": [{"name": "i", "dataset": "d"}]})["selection"],
                      tmp_path / "select")
    status = {r["motion"]: (r["status"], r["attempt"]) for r in rows}
    assert status["ramp_descent_then_stand"][0] == "recorded_later_start" and status["glide_up_step"][0] == "failed"
    plan = videos_to_render(record, tmp_path / "select" / "selected.tsv", "all", None)
    assert {r["motion"]: a for r, a in plan["kept"]} == {m: s[1] for m, s in status.items() if m != "glide_up_step"}
    (failed, attempt), = plan["failed"]
    episodes = json.loads((record / "rollouts.json").read_text())["episodes"]
    assert failed["motion"] == "glide_up_step" and episodes[int(attempt[5:])]["start_time"] == 0.0
    capped = videos_to_render(record, tmp_path / "select" / "selected.tsv", "kept", 1)
    assert len(capped["kept"]) == 1 and capped["failed"] == []  # failures only where nothing is kept


def test_a_batch_that_keeps_nothing_shows_its_failures_under_kept(tmp_path):
    """report.videos: kept (the default) on a batch where every motion failed renders the failures,
    each from its start, so the report shows why; the quota still holds."""
    from physrec import config
    from physrec.render.batch_videos import videos_to_render
    from physrec.stages.select import run_select
    record = _record(tmp_path, {"kind": "pd"}, ("glide_up_step", "climb_step"))
    rows = run_select(record, config.validate({"iterations": [{"name": "i", "dataset": "d"}]})["selection"],
                      tmp_path / "select")
    assert {r["status"] for r in rows} == {"failed"}
    plan = videos_to_render(record, tmp_path / "select" / "selected.tsv", "kept", None)
    assert plan["kept"] == [] and sorted(r["motion"] for r, _ in plan["failed"]) == ["climb_step", "glide_up_step"]
    assert len(videos_to_render(record, tmp_path / "select" / "selected.tsv", "kept", 1)["failed"]) == 1


def test_no_headless_opengl_is_named_with_its_fix(monkeypatch):
    """Where OSMesa is asked for and absent: the reason and the fix (rendering then draws in software)."""
    import ctypes.util
    from physrec.render.gl import headless_gl_problem
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    problem = headless_gl_problem()
    assert problem and "MUJOCO_GL=osmesa" in problem and "libosmesa6" in problem and "libegl1" in problem


def test_the_software_renderer_draws_the_character_its_ghost_and_the_terrain(tmp_path):
    """render/software.py, without OpenGL: the simulated character (grey), its reference (blue,
    translucent) and the terrain are drawn where the camera sees them, and the fall shows."""
    record = _record(tmp_path, {"kind": "pd"}, ("glide_up_step",))
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    r = subprocess.run([sys.executable, "-c", SOFTWARE_FRAMES, str(record), str(tmp_path / "frames.npy")],
                       capture_output=True, text=True, timeout=300, env={**env, "MUJOCO_GL": "disable"})
    assert r.returncode == 0, r.stderr
    first, last = np.load(tmp_path / "frames.npy")
    sky = np.array([200, 214, 230])
    assert (np.abs(first[5] - sky).sum(axis=-1) < 5).mean() > 0.9  # the top row: sky
    centre = first[100:280, 280:360].reshape(-1, 3).astype(int)
    assert ((centre[:, 2] - centre[:, 0]) > 40).mean() > 0.02  # the blue ghost over the character, standing
    assert np.abs(last.astype(int) - first.astype(int)).mean() > 1  # it fell


SOFTWARE_FRAMES = """
import sys
import numpy as np
from physrec.render import software, video
captured = []
real = software.software_frames
def keep(*args):
    for frame in real(*args):
        captured.append(frame)
        yield frame
software.software_frames = keep
video.render_attempt(sys.argv[1], "traj_0", sys.argv[2] + ".mp4", 640, 360, "software")
np.save(sys.argv[2], np.stack([captured[0], captured[-1]]))
"""


def test_max_videos_is_spread_over_an_iterations_batches_in_plan_order():
    from physrec.render import video_quotas
    batches = [f"b{i:010x}" for i in range(5)]
    assert video_quotas(batches, 16) == dict(zip(batches, [4, 3, 3, 3, 3]))
    assert video_quotas(batches, 3) == dict(zip(batches[:3], [1, 1, 1]))  # the others get no videos job
    assert video_quotas(batches[:1], 16) == {batches[0]: 16}
    assert video_quotas(batches, None) == dict.fromkeys(batches)


def test_kept_means_what_selection_kept(tmp_path):
    """`--which kept` reads selection's choice; `succeeded` is every successful attempt."""
    import shutil
    from physrec.render.video import attempts_to_render
    from physrec.formats.tables import write_tsv
    from physrec.formats.rollouts import read_json
    record = tmp_path / "it" / "record" / "b0000000000"
    shutil.copytree(_record(tmp_path / "src", {"kind": "pd"}, ("ramp_descent_then_stand", "stand_flat")), record)
    episodes = read_json(record / "rollouts.json")["episodes"]
    succeeded = [f"traj_{e['episode_id']}" for e in episodes if e["success"]]
    assert succeeded
    with pytest.raises(Exception, match="selected.tsv not found"):
        attempts_to_render(record, "kept")
    write_tsv(tmp_path / "it" / "select" / "b0000000000" / "selected.tsv",
              [{"motion": "m", "attempt": succeeded[0]}, {"motion": "n", "attempt": None}], ["motion", "attempt"])
    assert attempts_to_render(record, "kept") == [succeeded[0]]
    assert attempts_to_render(record, "succeeded") == succeeded


def test_a_video_is_capped_at_max_seconds_a_failure_at_its_end(tmp_path):
    """report.max_video_s: a long attempt's video holds its first seconds, a failure's its last
    (where it fails); the page says which part is shown."""
    from physrec.render.batch_videos import shown_span
    from physrec.render.video import shown_frames
    assert shown_frames(300, 30, None, False) == range(300) and shown_frames(300, 30, 20, False) == range(300)
    assert shown_frames(5401, 30, 10, False) == range(301) and shown_frames(5401, 30, 10, True) == range(5100, 5401)
    assert shown_span({"start_time": "0.0", "end_time": "180.0"}, 10, False).startswith(
        "The video shows 0.0-10.0 s of this attempt's 0.0-180.0 s")
    assert "170.0-180.0 s" in shown_span({"start_time": "0.0", "end_time": "180.0"}, 10, True)
    assert shown_span({"start_time": "1.0", "end_time": "3.0"}, 10, True) == ""
    record = _record(tmp_path, {"kind": "pd"}, ("stand_flat",))
    r = _render("--record-dir", str(record), "--which", "all", "--out-dir", str(tmp_path / "videos"),
                "--width", "160", "--height", "96", "--max-seconds", "0.5")
    assert r.returncode == 0, r.stderr
    assert "OpenGL_accelerate" not in r.stderr  # PyOpenGL's INFO line, which read like an error
    meta, video = _frames(tmp_path / "videos" / "traj_0.mp4")
    assert len(video) == 16  # 0.5 s at 30 fps and the first frame
