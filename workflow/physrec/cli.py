"""Command line: one subcommand per workflow stage (the Snakemake rules call these)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from physrec import __version__
from physrec.render.gl import disable_gl_keeping_choice

log = logging.getLogger("physrec")
disable_gl_keeping_choice()  # `render` and `videos` choose their OpenGL before importing MuJoCo


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s physrec %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)
    # PyOpenGL says at INFO that its optional C speed-ups are absent; under physrec's prefix
    # that reads like an error in every plots, videos and render job.
    logging.getLogger("OpenGL").setLevel(logging.WARNING)


def cmd_check_config(a: argparse.Namespace) -> None:
    from physrec import config
    cfg = config.load(a.config, a.over)
    config.check_files(cfg, a.config)
    log.info("%s: valid %s: the schema (omitted keys take their defaults), %d iteration(s), and the "
             "character, tracker models and datasets it names exist; the motions are not read (index does that)",
             a.config, f"merged over {a.over}" if a.over else "on its own", len(cfg["iterations"]))


def cmd_demo(a: argparse.Namespace) -> None:
    from physrec.demo import write_demo
    path = write_demo(a.out)
    log.info("wrote the demo dataset %s", path)


def cmd_index(a: argparse.Namespace) -> None:
    from physrec import config
    from physrec.motion.character import Character
    from physrec.stages.index import index_dataset, write_manifest
    ch = Character.load(a.character)
    limits = config.limits(config.json_section("limits", a.limits, "--limits"), a.max_duration)
    rows = index_dataset(a.dataset, min_frames=a.min_frames, num_joints=ch.num_joints, num_bodies=ch.num_bodies,
                         control_hz=a.control_hz, limits=limits, terrain_margin=a.terrain_margin)
    write_manifest(a.out, rows)
    bad = [r for r in rows if not r["valid"]]
    for r in bad:
        log.warning("invalid motion %s: %s", r["name"], r["error"])
    log.info("indexed %d motions from %s: %d valid, %d invalid", len(rows), a.dataset, len(rows) - len(bad), len(bad))


def cmd_split(a: argparse.Namespace) -> None:
    from physrec.stages.batch_plan import make_plan, write_plan
    from physrec.stages.index import read_manifest
    rows = make_plan(read_manifest(a.manifest), a.batch_size)
    write_plan(a.out, rows)
    log.info("planned %d motions in %d batch(es)", len(rows), len({r["batch"] for r in rows}))


def cmd_record(a: argparse.Namespace) -> None:
    from physrec.config import json_section
    from physrec.progress import lines_above_bars
    from physrec.stages.record import run_record
    start = time.perf_counter()
    with lines_above_bars():
        rec = run_record(a.plan, a.batch, json_section("record", a.record, "--record"),
                         json_section("tracker", a.tracker, "--tracker"),
                         json_section("backend", a.backend, "--backend"), a.character, a.seed, a.threads, a.out_dir,
                         ["physrec"] + sys.argv[1:], progress=log.info, integrity_token=a.integrity_token)
    motion_s = sum(a_.end_time - a_.start_time for a_ in rec.attempts)
    wall = time.perf_counter() - start
    log.info("[%s] %d physics steps, %.1f motion-seconds simulated in %.1f s wall (%.0f steps/s)",
             a.batch, rec.sim_steps, motion_s, wall, rec.sim_steps / max(wall, 1e-9))


def cmd_select(a: argparse.Namespace) -> None:
    from physrec.stages.select import run_select
    from physrec.config import json_section
    rows = run_select(a.record_dir, json_section("selection", a.selection, "--selection"), a.out_dir,
                      a.integrity_token)
    kept = sum(r["status"].startswith("recorded") for r in rows)
    rejected = [r for r in rows if r["status"] == "rejected"]
    log.info("kept %d of %d motions from %s%s", kept, len(rows), a.record_dir,
             f"; {len(rejected)} more succeeded in simulation but were rejected by a selection threshold (first: "
             f"{rejected[0]['motion']}, {rejected[0]['fail_reason']}; the iteration's summary.md lists them)"
             if rejected else "")


def cmd_merge(a: argparse.Namespace) -> None:
    from physrec.stages.merge import run_merge
    s = run_merge(a.iteration, a.manifest, a.plan, [Path(p) for p in a.select_dirs], [Path(p) for p in a.record_dirs],
                  a.base_dataset or None, a.weight_scale, a.out_dir, a.trajectories, progress=log.info,
                  integrity_token=a.integrity_token)
    m = s["motions"]
    log.info("%s: %d/%d valid motions recorded (%d full length, %d later start), %d failed, %d rejected, %d invalid",
             a.iteration, m["recorded"], m["valid"], m["recorded_full_length"], m["recorded_later_start"],
             m["failed"], m["rejected"], m["invalid"])


def cmd_run_summary(a: argparse.Namespace) -> None:
    from physrec.report.plots import run_summary_plot
    from physrec.stages.run_summary import run_summary
    pairs = []
    for item in a.iterations:
        name, sep, tracker = item.partition(":")
        if not sep or not name:
            from physrec.config import ConfigError
            raise ConfigError(f"--iterations: {item!r} is not NAME:TRACKER_KIND")
        pairs.append((name, tracker))
    rows = run_summary(pairs, a.results_dir, a.out_dir)
    run_summary_plot(rows, Path(a.out_dir) / "run_summary.png")
    log.info("run summary of %d iteration(s): %s", len(rows),
             ", ".join(f"{r['iteration']} {r['recorded']}/{r['valid']} recorded" for r in rows))


def cmd_plots(a: argparse.Namespace) -> None:
    from physrec.report.plots import iteration_plots, summary_html
    out = Path(a.out_dir)
    paths = iteration_plots(a.iteration, Path(a.summary), Path(a.manifest), [Path(d) for d in a.record_dirs], out)
    paths.append(summary_html(Path(a.summary), out / "summary.html", Path(a.manifest)))
    log.info("%s: wrote %s", a.iteration, ", ".join(p.name for p in paths))


def _enable_rendering() -> str:
    """Before MuJoCo's first import: the renderer, "opengl" (headless EGL, or what the user's
    MUJOCO_GL names) or "software" where there is none."""
    from physrec.render.gl import choose_renderer
    return choose_renderer(log.warning)


def cmd_render(a: argparse.Namespace) -> None:
    kind = _enable_rendering()
    from physrec.render.video import attempts_to_render, render_attempt
    names = a.attempt or attempts_to_render(a.record_dir, a.which)
    out = Path(a.out_dir)
    for i, name in enumerate(names):
        path = render_attempt(a.record_dir, name, out / f"{name}.mp4", a.width, a.height, kind,
                              a.max_seconds or None)
        log.info("[%d/%d] wrote %s", i + 1, len(names), path)


def cmd_videos(a: argparse.Namespace) -> None:
    kind = _enable_rendering()
    from physrec.render.batch_videos import batch_videos
    paths = batch_videos(a.record_dir, a.selected, a.which, a.per_batch or None, a.out_dir, a.width, a.height, kind,
                         a.max_seconds or None)
    log.info("%s: wrote %d video(s) into %s", a.record_dir, len(paths), a.out_dir)


def cmd_replay(a: argparse.Namespace) -> None:
    from physrec.stages.replay import replay_folder
    results = replay_folder(a.record_dir, a.attempt or None, a.tolerance)
    for r in results:
        (log.info if r.ok else log.error)("%s", r.describe())
    bad = [r for r in results if not r.ok]
    if bad:
        from physrec.stages.replay import ReplayError
        raise ReplayError(f"{len(bad)} of {len(results)} attempt(s) of {a.record_dir} did not replay")
    log.info("%s: %d attempt(s) replayed", a.record_dir, len(results))


def cmd_parc_obs(a: argparse.Namespace) -> None:
    from physrec.inspection import parc_obs
    from physrec.motion.character import Character
    obs = parc_obs(Path(a.reference), Path(a.states), Path(a.out), Character.load(a.character), a.control_hz)
    log.info("wrote %s: PARC observations %s (float32)", a.out, list(obs.shape))


def cmd_states(a: argparse.Namespace) -> None:
    from physrec.inspection import attempt_states
    frames, source = attempt_states(Path(a.record_dir), a.attempt, Path(a.out))
    log.info("wrote %s: %d states of %s; its observations: physrec parc-obs --reference %s --states %s --out OBS.npy",
             a.out, frames, a.attempt, source, a.out)


def cmd_parc_act(a: argparse.Namespace) -> None:
    from physrec.inspection import parc_act
    from physrec.motion.character import Character
    act = parc_act(Path(a.model), Path(a.obs), Path(a.out), Character.load(a.character))
    log.info("wrote %s: PD targets %s (float32, clipped to the action bounds)", a.out, list(act.shape))


def cmd_bench(a: argparse.Namespace) -> None:
    from physrec.bench import main as bench_main
    bench_main(a.extra)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="physrec", description=__doc__)
    p.add_argument("--version", action="version", version=f"physrec {__version__}")
    p.add_argument("--log", help="also write the log to this file")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("check-config", help="validate a workflow config file without running anything",
                       description="Check a config file: the schema (unknown keys, types, ranges; omitted keys "
                       "take their defaults) and that the character, tracker models and datasets it names exist. "
                       "The motions are not read. Snakemake merges --configfile over config/config.yaml: give "
                       "--over config/config.yaml to check that merge, as a file with only the keys that differ "
                       "needs.")
    s.add_argument("config")
    s.add_argument("--over", metavar="BASE", help="merge the config over this file first (config/config.yaml)")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("demo", help="write the built-in demo dataset")
    s.add_argument("--out", required=True, help="folder for dataset.yaml and motions/")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("index", help="check every motion of a dataset YAML and write the manifest")
    s.add_argument("--dataset", required=True)
    s.add_argument("--character", default="builtin:humanoid")
    s.add_argument("--min-frames", type=int, default=2)
    s.add_argument("--control-hz", type=int, default=30, help="motions shorter than one control step are invalid")
    s.add_argument("--max-duration", type=float, default=1000.0, help="record.max_duration_s: longer motions are "
                   "invalid")
    s.add_argument("--terrain-margin", type=float, default=3.0, help="record.terrain_margin_m: the terrain a "
                   "character can reach, whose collision boxes limits.max_collision_boxes bounds")
    s.add_argument("--limits", default="{}", help="JSON of the config's limits section (default: its defaults)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("split", help="assign valid motions to batches (stable under additions)")
    s.add_argument("--manifest", required=True)
    s.add_argument("--batch-size", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("record", help="simulate one batch and write its trajectories and PARC companions")
    s.add_argument("--plan", required=True)
    s.add_argument("--batch", required=True)
    s.add_argument("--record", required=True, help="JSON of the config's record section")
    s.add_argument("--tracker", required=True, help='JSON tracker spec, e.g. {"kind": "pd"}')
    s.add_argument("--backend", default='{"name": "mujoco"}',
                   help='JSON simulator spec, e.g. {"name": "mujoco_warp", "device": "cuda:0"}')
    s.add_argument("--character", default="builtin:humanoid")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--integrity-token", default="", help="written to <out-dir>/integrity.txt: the token "
                   "the workflow ran this job with (stages/integrity.py)")
    s.set_defaults(func=cmd_record)

    s = sub.add_parser("select", help="choose the kept attempt per motion and write PARC motion files")
    s.add_argument("--record-dir", required=True)
    s.add_argument("--selection", required=True, help="JSON of the config's selection section")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--integrity-token", default="", help="written to <out-dir>/integrity.txt: the token "
                   "the workflow ran this job with (stages/integrity.py)")
    s.set_defaults(func=cmd_select)

    s = sub.add_parser("merge", help="merge batches: recorded motions, manifest, summary, next dataset")
    s.add_argument("--iteration", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--plan", required=True)
    s.add_argument("--select-dirs", nargs="*", default=[])
    s.add_argument("--record-dirs", nargs="*", default=[])
    s.add_argument("--base-dataset", default="")
    s.add_argument("--weight-scale", type=float, default=1.0)
    s.add_argument("--trajectories", action="store_true",
                   help="also write every batch's trajectories into <out-dir>/trajectories.h5 + .json")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--integrity-token", default="", help="written to <out-dir>/integrity.txt: the token "
                   "the workflow ran this job with (stages/integrity.py)")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("run-summary", help="one table of every iteration's outcome (run_summary.tsv, .md)")
    s.add_argument("--results-dir", required=True, help="the results_dir holding <iteration>/summary.json")
    s.add_argument("--iterations", nargs="+", required=True, help="NAME:TRACKER_KIND in config order")
    s.add_argument("--out-dir", required=True)
    s.set_defaults(func=cmd_run_summary)

    s = sub.add_parser("plots", help="an iteration's plots and summary page for the Snakemake report")
    s.add_argument("--iteration", required=True)
    s.add_argument("--summary", required=True, help="the iteration's summary.json")
    s.add_argument("--manifest", required=True, help="the iteration's merged manifest.tsv")
    s.add_argument("--record-dirs", nargs="*", default=[])
    s.add_argument("--out-dir", required=True)
    s.set_defaults(func=cmd_plots)

    def video_args(s: argparse.ArgumentParser, out_help: str) -> None:
        s.add_argument("--record-dir", required=True, help="a record folder: results/<iteration>/record/<batch>")
        s.add_argument("--out-dir", required=True, help=out_help)
        s.add_argument("--width", type=int, default=640)
        s.add_argument("--height", type=int, default=360)
        s.add_argument("--max-seconds", type=float, default=0,
                       help="cap each video at this many seconds (0: the whole attempt)")

    s = sub.add_parser("render", help="MP4 videos of recorded attempts beside their reference")
    video_args(s, "writes <attempt>.mp4 here")
    s.add_argument("--attempt", nargs="*", default=[], help="attempts, e.g. traj_0 (default: --which)")
    s.add_argument("--which", default="kept", help="all attempts, those selection kept, every successful one "
                   "(succeeded) or the failed ones (default: kept)")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("videos", help="a batch's videos for the report: kept and/or failed motions (report.videos)")
    video_args(s, "writes kept/<motion>.mp4 and failed/<motion>.mp4 here")
    s.add_argument("--selected", required=True, help="the batch's selected.tsv")
    s.add_argument("--which", choices=["kept", "failed", "all"], default="kept",
                   help="kept: also the failures of a batch that keeps no motion")
    s.add_argument("--per-batch", type=int, default=0, help="at most this many of each kind (0: every motion)")
    s.set_defaults(func=cmd_videos)

    s = sub.add_parser("replay", help="re-simulate recorded attempts from their actions and compare the states")
    s.add_argument("--record-dir", required=True, help="a record folder: results/<iteration>/record/<batch>")
    s.add_argument("--attempt", nargs="*", default=[], help="attempts to replay, e.g. traj_0 (default: all)")
    s.add_argument("--tolerance", type=float, help="largest state difference accepted (default: bit for bit "
                   "for CPU recordings with this MuJoCo, else 1e-3)")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("parc-obs", help="PARC's observation for stored character states following a reference motion")
    s.add_argument("--reference", required=True, help="a PARC motion file; its own terrain is the terrain")
    s.add_argument("--states", required=True, help="STATES.npz: time, root_pos, root_rot, root_vel, root_ang_vel, "
                                                   "dof, dof_vel, contacts (see docs/trackers.md)")
    s.add_argument("--out", required=True, help="OBS.npy, float32 [N, 1312]")
    s.add_argument("--character", default="builtin:humanoid")
    s.add_argument("--control-hz", type=int, default=30, help="spacing of the target frames (PARC: 30)")
    s.set_defaults(func=cmd_parc_obs)

    s = sub.add_parser("states", help="a recorded attempt's states as the STATES.npz that parc-obs reads")
    s.add_argument("--record-dir", required=True, help="a record folder: results/<iteration>/record/<batch>")
    s.add_argument("--attempt", required=True, help="the attempt, e.g. traj_0 (attempts.tsv lists them)")
    s.add_argument("--out", required=True, help="STATES.npz: time, root_pos, root_rot, root_vel, root_ang_vel, "
                                                "dof, dof_vel, contacts, in the motion's own coordinates")
    s.set_defaults(func=cmd_states)

    s = sub.add_parser("parc-act", help="a PARC checkpoint's PD targets for stored observations")
    s.add_argument("--model", required=True, help="PARC's model.pt")
    s.add_argument("--obs", required=True, help="OBS.npy, [N, 1312]")
    s.add_argument("--out", required=True, help="ACT.npy, float32 [N, 28], clipped to the action bounds")
    s.add_argument("--character", default="builtin:humanoid")
    s.set_defaults(func=cmd_parc_act)

    s = sub.add_parser("bench", add_help=False,
                       help="benchmarks: throughput, sampling, batch, workflow (physrec bench --help)")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "bench":  # bench forwards its own arguments to physrec.bench
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    _setup_logging(args.log)
    try:
        args.func(args)
    except KeyboardInterrupt:
        log.error("physrec %s: interrupted", args.command)
        return 130
    except Exception as e:
        if not _is_users_problem(e):
            log.exception("physrec %s failed on an unexpected error (a bug in physrec or a library it uses; "
                          "please report it with this traceback):", args.command)
            return 1
        log.error("%s", e)
        return 1
    return 0


def _is_users_problem(e: BaseException) -> bool:
    """physrec's own errors say what to fix in one line; a file the system cannot read is the
    user's too. Anything else (an IndexError, a numpy shape or CUDA error) is a bug whose stack matters."""
    return type(e).__module__.split(".")[0] == "physrec" or isinstance(e, OSError)


if __name__ == "__main__":
    sys.exit(main())
