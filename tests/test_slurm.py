"""The workflow through workflow/profiles/slurm on a real SLURM cluster (slurm_cluster.py).

The demo runs once through sbatch and once locally, and the outputs must be the same bytes;
then a record job that fails must end the run with the SLURM job reported as failed. Every
Snakemake run is under `timeout -k`: a status command that cannot see finished jobs makes
Snakemake wait forever (docs/clusters.md, "Running on SLURM"). The partition is given on the command
line, the way a site's keys are meant to be given, and the first status check comes after
1 s instead of 40 s, so that each job takes seconds.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)
from snakemake_project import BIN, CONFIG, REPO, base_config, make_project, snakemake, write_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                                reason="snakemake-executor-plugin-slurm is not installed (pip install -e \".[test]\" installs it)")

PROFILE = REPO / "workflow" / "profiles" / "slurm"
TIMEOUT_S = 240
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


def slurm_snakemake(project: Path, cluster, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Snakemake with the repo's SLURM profile, as a user would run it, plus the test's
    partition and short status checks; the record jobs get the threads the node has (the
    profile's 8 would be a request no node here can meet)."""
    threads = min(2, cluster.cpus)
    cmd = ["timeout", "-k", "10", str(TIMEOUT_S), sys.executable, "-m", "snakemake",
           "--profile", str(PROFILE), "--configfile", CONFIG,
           "--default-resources", f"slurm_partition={cluster.partition}",
           "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
           "--set-threads", f"record={threads}", *args]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S + 30)
    return r, time.monotonic() - t0


def output_of(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as key=value pairs; finished jobs stay visible for MinJobAge."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10).stdout
    return dict(m.groups() for m in re.finditer(r"(\S+?)=(\S*)", out))


def result_files(project: Path) -> dict[str, bytes]:
    """Every file under results/, with the project's absolute path (the next dataset.yaml
    names the recorded motions by absolute path) replaced by a placeholder."""
    root = project / "results"
    return {str(p.relative_to(root)): p.read_bytes().replace(str(project).encode(), b"<project>")
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def slurm_demo(slurm_cluster, tmp_path_factory):  # noqa: F811
    """The demo once through SLURM and once locally, in two projects."""
    cfg = base_config("builtin:demo")
    local = make_project(tmp_path_factory.mktemp("local") / "proj", cfg)
    snakemake(local)
    project = make_project(tmp_path_factory.mktemp("slurm") / "proj", cfg)
    r, seconds = slurm_snakemake(project, slurm_cluster)
    print(f"\nSLURM demo run: {seconds:.1f} s")
    return project, local, r, seconds


def test_demo_through_sbatch_equals_local_run(slurm_demo, slurm_cluster):  # noqa: F811
    project, local, r, seconds = slurm_demo
    out = output_of(r)
    assert r.returncode == 0, f"SLURM run failed with {r.returncode} after {seconds:.0f} s:\n{out[-6000:]}"

    # Every job but the local target rule went through sbatch, each with its own SLURM job.
    jobs = re.findall(r"^\s*(localrule|localcheckpoint|rule|checkpoint) (\w+):$", out, re.M)
    remote = sorted(name for kind, name in jobs if not kind.startswith("local"))
    assert sorted(name for kind, name in jobs if kind.startswith("local")) == ["all"]
    assert set(remote) == {"demo_dataset", "index", "split", "record", "select", "merge", "run_summary", "plots"}, remote
    submitted = SUBMITTED.findall(out)
    assert len(submitted) == len(remote), f"{len(remote)} jobs, {len(submitted)} sbatch submissions:\n{out[-6000:]}"
    assert len({slurm_id for _, slurm_id, _ in submitted}) == len(submitted)
    for _, slurm_id, log in submitted:
        assert Path(log).is_file(), log
        job = scontrol_job(slurm_id)
        assert job.get("JobState") == "COMPLETED", (slurm_id, job)
        assert job.get("Partition") == slurm_cluster.partition, (slurm_id, job)
    # set-threads became --cpus-per-task.
    record_log = next(log for _, _, log in submitted if "/rule_record/" in log)
    threads = min(2, slurm_cluster.cpus)
    assert scontrol_job(Path(record_log).stem).get("CPUs/Task") == str(threads)

    # The same bytes as a local run. record_args.txt is the `physrec record` command line,
    # whose --threads differs on purpose (the profile sets the record jobs' threads).
    ours, theirs = result_files(project), result_files(local)
    assert sorted(ours) == sorted(theirs)
    args = [k for k in ours if k.endswith("record_args.txt")]
    assert args
    differ = [k for k in ours if k not in args and ours[k] != theirs[k]]
    assert not differ, f"differ from the local run: {differ}"
    for k in args:
        mine, local_args = ours[k].decode(), theirs[k].decode()
        assert f"--threads {threads} " in mine and "--threads 1 " in local_args
        assert re.sub(r"--threads \d+", "", mine) == re.sub(r"--threads \d+", "", local_args)


def test_failing_job_is_reported_failed(slurm_demo, slurm_cluster, tmp_path):  # noqa: F811
    """A record job that fails (a tracker model that is no checkpoint) ends the run with an
    error naming the failed SLURM job, well within the timeout. It starts from a copy of the
    demo's project so that only the record job is redone."""
    project = tmp_path / "proj"
    shutil.copytree(slurm_demo[0], project, symlinks=True)
    (project / "model.pt").write_bytes(b"not a checkpoint")
    cfg = base_config("builtin:demo")
    cfg["iterations"][0]["tracker"] = {"kind": "parc", "model": "model.pt"}
    write_config(project, cfg)
    r, seconds = slurm_snakemake(project, slurm_cluster)
    out = output_of(r)
    print(f"\nSLURM failing run: {seconds:.1f} s")
    # 124 or 137 would be `timeout` ending a Snakemake that waits for ever.
    assert r.returncode == 1, f"exit {r.returncode} after {seconds:.0f} s:\n{out[-6000:]}"
    failed = re.findall(r"SLURM-job '(\d+)' failed, SLURM status is: '(\w+)'", out)
    assert failed, out[-6000:]
    (slurm_id, status), = set(failed)
    assert status == "FAILED"
    assert scontrol_job(slurm_id).get("JobState") == "FAILED"
    assert re.search(rf"Job \d+ has been submitted with SLURM jobid {slurm_id} \(log: \S+/rule_record/", out)
