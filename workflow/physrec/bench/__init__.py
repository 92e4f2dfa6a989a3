"""`physrec bench`: the benchmarks, one subcommand each, every figure with its machine.

throughput (recorder against the raw simulator in one run), sampling (the sampling tracker,
each motion alone), batch (one record job of N copies of PARC files through Snakemake),
workflow (the workflow layer on many tiny motions), iteration (a synthetic PARC iteration's
record job, end to end, with the time of a whole iteration projected). Each module has `add_arguments` and `run`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from pathlib import Path

from physrec.sim.backend import BackendSpec

SUBCOMMANDS = {
    "throughput": "the recorder's physics steps/s against the raw simulator (and simulator + bare policy), "
                  "measured side by side in one run",
    "sampling": "the sampling tracker: each motion recorded alone, its success, errors and CPU-s per motion-second",
    "batch": "one record job of N copies of PARC motion files through Snakemake: wall time, peak memory, outputs",
    "workflow": "the workflow layer at scale: DAG builds, a full run and reruns on many tiny motions",
    "iteration": "a synthetic PARC iteration's record job end to end with a PARC-size policy: motion-seconds per "
                 "wall-second, where the time goes, and a 2000 x 10 s iteration's projected time",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="physrec bench", description="Benchmarks of physrec; each prints its "
                                "figures with the machine they ran on. 'physrec bench SUBCOMMAND --help' lists "
                                "a subcommand's options.")
    sub = p.add_subparsers(dest="bench", required=True, metavar="SUBCOMMAND")
    for name, text in SUBCOMMANDS.items():
        s = sub.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".")
        module = importlib.import_module(f"physrec.bench.{name}")
        module.add_arguments(s)
        s.set_defaults(run=module.run)
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    a.run(a)


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("mujoco", "mujoco_warp"), default="mujoco")
    p.add_argument("--device", default="cuda", help="mujoco_warp: cuda, cuda:N or cpu")
    p.add_argument("--deterministic", action="store_true",
                   help="mujoco_warp: MuJoCo Warp's deterministic execution (the config's deterministic key)")


def backend_spec(a: argparse.Namespace) -> BackendSpec:
    warp = a.backend == "mujoco_warp"
    return BackendSpec(a.backend, a.device if warp else "cpu", a.threads, deterministic=warp and a.deterministic)


def machine() -> dict:
    """The machine and software a figure was measured on, printed once."""
    import mujoco
    out = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cores": os.cpu_count(),
           "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
           "mujoco": mujoco.__version__, "date": time.strftime("%Y-%m-%d")}
    print(f"machine: {out['machine']} {out['cores']} cores, {out['system']}, MuJoCo {mujoco.__version__}")
    return out


def load_average() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages, kept with each figure: on a shared machine
    they say how much of it the figure had."""
    return [round(x, 2) for x in os.getloadavg()]


def write_json(path: Path | None, head: dict, results: list[dict]) -> None:
    """The figures so far: written after every measurement, so a run stopped by a time limit keeps them."""
    if path is not None:
        path.write_text(json.dumps({**head, "results": results}, indent=2) + "\n")
