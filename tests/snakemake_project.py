"""Snakemake projects in temporary folders, shared by the tests that run the real workflow.

A project folder gets copies of the repo's Snakefile, workflow/rules, workflow/schemas, config/
and envs/ (the package itself is installed) plus a config file passed with --configfile.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IT = "iter0"
CONFIG = "test_config.yaml"


def make_project(dest: Path, cfg: dict) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", dest / "Snakefile")
    (dest / "workflow").mkdir(exist_ok=True)
    for sub in ("rules", "schemas", "report"):
        shutil.copytree(REPO / "workflow" / sub, dest / "workflow" / sub)
    shutil.copytree(REPO / "config", dest / "config")
    shutil.copytree(REPO / "envs", dest / "envs")  # rules declare conda envs; Snakemake records them
    includes = re.findall(r'^include:\s*["\']([^"\']+)["\']', (dest / "Snakefile").read_text(), re.M)
    assert includes, "the Snakefile includes no rule files"
    for inc in includes:
        assert (dest / inc).is_file(), f"Snakefile include {inc} does not resolve in the copied project"
    write_config(dest, cfg)
    return dest


def write_config(project: Path, cfg: dict) -> None:
    (project / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))


def snakemake(project: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", CONFIG, *args]
    r = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed with {r.returncode} in {project}:\n"
                    f"{r.stdout[-4000:]}\n{r.stderr[-8000:]}")
    return r


def base_config(dataset: str, **extra) -> dict:
    cfg = {"results_dir": "results", "iterations": [{"name": IT, "dataset": dataset, "tracker": {"kind": "pd"}}],
           "batch_size": 16, "seed": 0, "record": {"threads": 1},
           "report": {"videos": "none"}}  # seconds per run; the demo project's report test renders them
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg
