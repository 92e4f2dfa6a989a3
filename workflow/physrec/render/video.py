"""MP4 videos of recorded attempts: the simulated character, its kinematic reference as a
translucent ghost in the same place, on the motion's terrain, with a camera that follows
the root and the time, start, tracking errors and the termination reason on each frame.

Everything comes from a record folder (rollouts.h5, rollouts.json) and the motion's source
file (its terrain and reference), as `physrec replay` uses them. MuJoCo picks its OpenGL
backend when it is first imported: `physrec render` sets MUJOCO_GL=egl unless the user set
it (MUJOCO_GL=osmesa for OSMesa). Frames are encoded with imageio-ffmpeg (H.264, its own
ffmpeg binary) and text is drawn with Pillow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

from physrec.formats.rollouts import open_rollouts
from physrec.formats.atomic import atomic_output
from physrec.formats.tables import read_tsv_records
from physrec.recording.plan import build_reference, motion_boxes
from physrec.sim.backend import BackendSpec, make_backend
from physrec.stages.record_folder import RecordFolder

GHOST_RGBA = (0.35, 0.6, 1.0, 0.35)  # the reference
CAMERA = {"distance": 4.0, "azimuth": 90.0, "elevation": -15.0}  # MuJoCo's free camera, following the root
TERRAIN_RGBA = (0.62, 0.58, 0.52, 1.0)
WHICH = ("all", "kept", "succeeded", "failed")


class RenderError(RuntimeError):
    """Rendering cannot run here (no headless OpenGL, no encoder) or was asked for what is not there."""


def _encoder():
    try:
        import imageio_ffmpeg
        from PIL import Image, ImageDraw
    except ImportError:
        raise RenderError("physrec render needs imageio-ffmpeg and Pillow, which physrec's install brings: "
                          "reinstall physrec (pip install -e .)") from None
    return imageio_ffmpeg, Image, ImageDraw


def _renderer(model, width: int, height: int):
    import mujoco
    try:
        return mujoco.Renderer(model, height, width)
    except Exception as e:  # noqa: BLE001 - MuJoCo raises several kinds for a missing GL
        import os
        from physrec.render.gl import FIX
        raise RenderError(f"no headless OpenGL (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}: {e}); {FIX}") from e


def _frames(model, sim_qpos: np.ndarray, ref_qpos: np.ndarray, width: int, height: int,
            renderer_kind: str) -> Iterator[np.ndarray]:
    """RGB frames [H, W, 3] of the simulated states with the reference's geoms added translucent:
    MuJoCo's renderer (OpenGL), or physrec's own where there is no headless OpenGL (software)."""
    if renderer_kind == "software":
        from physrec.render.software import software_frames
        yield from software_frames(model, sim_qpos, ref_qpos, width, height, CAMERA, GHOST_RGBA)
        return
    import mujoco
    renderer = _renderer(model, width, height)
    sim, ref = mujoco.MjData(model), mujoco.MjData(model)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance, cam.azimuth, cam.elevation = CAMERA["distance"], CAMERA["azimuth"], CAMERA["elevation"]
    opt, pert = mujoco.MjvOption(), mujoco.MjvPerturb()
    opt.geomgroup[:] = 1  # the terrain is in geom group 3, hidden by default
    lookat = sim_qpos[0, :3].copy()
    try:
        for q_sim, q_ref in zip(sim_qpos, ref_qpos):
            sim.qpos[:], ref.qpos[:] = q_sim, q_ref
            mujoco.mj_kinematics(model, sim)
            mujoco.mj_kinematics(model, ref)
            lookat = 0.8 * lookat + 0.2 * q_sim[:3]  # a camera that follows the root without its jitter
            cam.lookat[:] = lookat
            renderer.update_scene(sim, cam, opt)
            scene = renderer.scene
            first = scene.ngeom
            mujoco.mjv_addGeoms(model, ref, opt, pert, mujoco.mjtCatBit.mjCAT_DYNAMIC, scene)
            for i in range(first, scene.ngeom):
                scene.geoms[i].rgba[:] = GHOST_RGBA
            yield renderer.render()
    finally:
        renderer.close()


def shown_frames(frames: int, fps: float, max_seconds: float | None, tail: bool) -> range:
    """The frames of an attempt a video shows: all, or at most `max_seconds` of them, the first
    ones, or with `tail` the last ones (a failure's fall)."""
    if not max_seconds or frames <= max_seconds * fps + 1:
        return range(frames)
    n = int(max_seconds * fps) + 1
    return range(frames - n, frames) if tail else range(n)


def _caption(ep: dict, t: float, errors: np.ndarray | None, last: bool, end_time: float) -> str:
    line = f"{ep['motion']}  t {t:5.2f} s  start {ep['start_fraction']:.0%}"
    if errors is not None:
        line += (f"  root {errors[0]:.2f} m  {math.degrees(errors[1]):4.1f} deg  body {errors[3]:.2f} m"
                 f"  offset {errors[2]:.2f}")
    if last:
        line += ("  | " if t >= end_time else f"  | cut; attempt ends at {end_time:.1f} s: ") + (
            "success" if ep["success"] else "failed") + (f": {ep['fail_reason']}" if ep["fail_reason"] else "")
    return line


def render_attempt(record_dir: str | Path, attempt: str, out: str | Path, width: int = 640,
                   height: int = 360, renderer_kind: str = "opengl", max_seconds: float | None = None,
                   tail: bool = False) -> Path:
    """Write the MP4 of one attempt (traj_<i>) of a record folder; returns its path.
    `renderer_kind`: "opengl" (MuJoCo's, headless EGL or OSMesa) or "software" (render/software.py).
    `max_seconds` caps the video (shown_frames: the first seconds, the last with `tail`)."""
    ffmpeg, Image, ImageDraw = _encoder()
    folder, out = RecordFolder(record_dir), Path(out)
    folder.check_attempts([attempt])
    ep = folder.episodes[attempt]
    character, settings, motion = folder.character(), folder.settings(), folder.motion(attempt)
    boxes = motion_boxes(motion, settings.terrain_margin)
    with open_rollouts(folder.h5) as f:
        g = f[attempt]
        qpos, ref_time, errors = g["env_states/qpos"][()], g["ref_time"][()], g["tracking_errors"][()]
    shown = shown_frames(len(qpos), settings.physics.control_hz, max_seconds, tail)
    end_time = float(ref_time[-1])
    qpos, ref_time, err_before = qpos[shown].copy(), ref_time[shown], [errors[k - 1] if k else None for k in shown]
    qpos[:, :2] -= np.asarray(ep["world_offset"])  # the motion's own frame, where its terrain is
    ref = build_reference(character, [motion])
    pose = ref.pose(np.zeros(len(ref_time), dtype=np.int64), ref_time)
    ref_qpos = character.pose_to_qpos(pose.root_pos, pose.root_rot, pose.joint_rot)
    sim = make_backend(BackendSpec(), character, settings.physics, 1, len(boxes))
    sim.set_terrain(np.arange(1), boxes[None])
    model = sim.models[0]  # type: ignore[attr-defined]
    sim.close()
    model.vis.global_.offwidth, model.vis.global_.offheight = max(width, 640), max(height, 480)
    # The compiled world's parked slots sit 1 km down, which makes its extent 1 km and the
    # near clipping plane 10 m away: the scale of the character instead.
    model.stat.extent = 4.0
    model.geom_rgba[:len(boxes)] = TERRAIN_RGBA  # terrain boxes are the first geoms (sim.world)
    model.vis.headlight.ambient[:] = 0.35
    model.vis.headlight.diffuse[:] = 0.65
    fps = settings.physics.control_hz
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        writer = ffmpeg.write_frames(str(tmp), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                     output_params=["-f", "mp4"], macro_block_size=1, ffmpeg_log_level="error")
        writer.send(None)
        for k, frame in enumerate(_frames(model, qpos, ref_qpos, width, height, renderer_kind)):
            img = Image.fromarray(frame)
            draw = ImageDraw.Draw(img)
            text = _caption(ep, float(ref_time[k]), err_before[k], k == len(qpos) - 1, end_time)
            draw.rectangle([0, 0, width, 14], fill=(0, 0, 0))
            draw.text((4, 1), text, fill=(255, 255, 255))
            writer.send(np.ascontiguousarray(np.asarray(img)))
        writer.close()
    return out


def attempts_to_render(record_dir: str | Path, which: str) -> list[str]:
    """traj names of a record folder: all, those selection kept (from the batch's selected.tsv,
    results/<iteration>/select/<batch>/), every successful one (kept or not), or the failed ones."""
    if which not in WHICH:
        raise RenderError(f"--which: {which!r}; one of {', '.join(WHICH)}")
    episodes = RecordFolder(record_dir).episodes
    if which == "kept":
        selected = Path(record_dir).parent.parent / "select" / Path(record_dir).name / "selected.tsv"
        if not selected.is_file():
            raise RenderError(f"--which kept: {selected} not found: what selection kept is read there "
                              "(--which succeeded renders every successful attempt)")
        return [r["attempt"] for r in read_tsv_records(selected) if r["attempt"] and r["attempt"] in episodes]
    return [name for name, e in episodes.items() if which == "all" or (which == "succeeded") == bool(e["success"])]
