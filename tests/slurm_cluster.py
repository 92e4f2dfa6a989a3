"""A real single-node SLURM cluster on this machine, for the tests that submit through sbatch.

The `slurm_cluster` fixture (session scope: one cluster per machine, it uses the global
/etc/slurm and ports 6817-6819) reuses a cluster that already answers, and otherwise writes a
minimal slurm.conf and starts munged, slurmctld and slurmd itself, without systemd, and stops
them at the end of the session. It skips, with the reason, where that cannot work: SLURM not
installed, not root, or a slurm.conf that these tests did not write.

The configuration has no accounting (no slurmdbd), so `sacct` cannot see jobs: Snakemake's
SLURM plugin must use `squeue` for job status, which needs a MinJobAge of at least three
times --slurm-init-seconds-before-status-checks (else it silently falls back to sacct and
waits forever). MinJobAge is 300 s here.
"""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# Written by physrec's tests/slurm_cluster.py"
PARTITION = "physrec"
NODE = "localnode"
MIN_JOB_AGE = 300
MIN_REUSABLE_JOB_AGE = 120  # the plugin's own threshold for recommending squeue
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "munge", "unmunge", "setpriv")
START_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    partition: str      # submit here (--default-resources slurm_partition=...)
    cpus: int           # CPUs of the largest node: the most a job may ask for
    mem_mb: int         # memory of the largest node: the most a job may ask for
    min_job_age: int    # seconds a finished job stays visible to squeue
    started: bool       # False when an already running cluster is reused


def _run(*cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


def _missing_binaries() -> list[str]:
    return [b for b in DAEMONS + CLIENTS if shutil.which(b) is None
            and not Path("/usr/sbin", b).exists()]


def _binary(name: str) -> str:
    """Daemons live in /usr/sbin, which a non-login root shell may not have on PATH."""
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _munge_works() -> bool:
    cred = _run("munge", "-n")
    return cred.returncode == 0 and subprocess.run(
        ["unmunge"], input=cred.stdout, capture_output=True, text=True, timeout=10).returncode == 0


def _controller_up() -> bool:
    r = _run("scontrol", "ping")
    return r.returncode == 0 and "is UP" in r.stdout


def _ready_cluster() -> SlurmCluster | None:
    """The running cluster if it can take a job now: controller UP and a default partition
    with an idle (or partly used) node; None otherwise."""
    if not _controller_up():
        return None
    # One line per partition and node state; a state with a suffix (idle*, idle~, ...) is a node
    # that does not respond, is powered down or is being rebooted.
    r = _run("sinfo", "-h", "-o", "%P %T %c %m")
    partition, default, cpus, mem_mb = None, None, 0, 0
    for line in r.stdout.splitlines():
        name, state, ncpus, mem = line.split()
        if state in ("idle", "mixed", "allocated"):
            cpus, mem_mb = max(cpus, int(ncpus.rstrip("+"))), max(mem_mb, int(mem.rstrip("+")))
            partition = partition or name.rstrip("*")
            default = default or (name.rstrip("*") if name.endswith("*") else None)
    if partition is None:
        return None
    m = re.search(r"^MinJobAge\s*=\s*(\d+)", _run("scontrol", "show", "config").stdout, re.M)
    return SlurmCluster(default or partition, cpus, mem_mb, int(m.group(1)) if m else 0, started=False)


def slurm_conf(cpus: int, mem_mb: int) -> str:
    """A one-node cluster that does not depend on the machine's hostname (localhost and a
    node named localnode on 127.0.0.1), without cgroups and without accounting."""
    return f"""{MARKER}: a one-node test cluster.
ClusterName=physrec-test
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue this long: Snakemake's status checks use squeue.
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def _node_mem_mb() -> int:
    """80 % of the available memory: a RealMemory above the machine's makes the node INVAL."""
    with open("/proc/meminfo") as f:
        info = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}
    return int(info.get("MemAvailable", info["MemFree"]) / 1024 * 0.8)


def _user_ids(name: str) -> tuple[int, int]:
    import pwd
    p = pwd.getpwnam(name)
    return p.pw_uid, p.pw_gid


def _make_dirs() -> None:
    """Runtime folders a fresh machine (no systemd, no tmpfiles.d) may lack."""
    for path, owner in (("/run/munge", "munge"), ("/var/lib/munge", "munge"), ("/var/log/munge", "munge"),
                        ("/run/slurm", "slurm"), ("/var/lib/slurm/slurmctld", "slurm"),
                        ("/var/lib/slurm/slurmd", "root"), ("/var/log/slurm", "slurm")):
        Path(path).mkdir(parents=True, exist_ok=True)
        os.chown(path, *_user_ids(owner))
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run([_binary("mungekey"), "--create", "--keyfile", str(key)], check=True)
        os.chown(key, *_user_ids("munge"))
        key.chmod(0o600)


class _Daemons:
    """The daemons this session started, with their logs, so that exactly those are stopped."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *cmd: str) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))

    def exited(self) -> list[str]:
        return [f"{name} exited with {p.returncode}" for name, p in self.procs if p.poll() is not None]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM in reverse start order, then SIGKILL for any that outlive 10 s."""
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def start_cluster(log_dir: Path) -> tuple[SlurmCluster, _Daemons]:
    """Write slurm.conf, start munged (unless munge already works), slurmctld and slurmd, and
    wait until the node is idle. Raises RuntimeError, with the daemons' logs, if it is not."""
    cpus = os.cpu_count() or 1
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(slurm_conf(cpus, _node_mem_mb()))
    _make_dirs()
    daemons = _Daemons(log_dir)
    try:
        if not _munge_works():
            daemons.start("munged", "setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                          _binary("munged"), "--foreground")
            _wait(_munge_works, daemons, "munge credentials")
        # -c: no jobs recovered from an earlier test session's state.
        daemons.start("slurmctld", _binary("slurmctld"), "-D", "-c")
        _wait(_controller_up, daemons, "scontrol ping UP")
        daemons.start("slurmd", _binary("slurmd"), "-D", "-N", NODE)
        cluster = _wait(_ready_cluster, daemons, "an idle node in sinfo")
    except BaseException:
        daemons.stop()
        raise
    return dataclasses.replace(cluster, started=True), daemons


def _wait(ready, daemons: _Daemons, what: str):
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        result = ready()
        if result:
            return result
        dead = daemons.exited()
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"SLURM test cluster: no {what} after {START_TIMEOUT_S} s"
                               f" ({', '.join(dead) or 'daemons running'})\n{daemons.logs()}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A SLURM cluster that takes jobs now: reused if one already answers, else started here
    and stopped at the end of the session."""
    missing = _missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed (missing {', '.join(missing)}; .ci/run installs "
                    "slurmctld slurmd slurm-client munge as root)")
    running = _ready_cluster()
    if running is not None:
        if running.min_job_age < MIN_REUSABLE_JOB_AGE:
            pytest.skip(f"the running SLURM cluster has MinJobAge={running.min_job_age} s: squeue forgets "
                        f"finished jobs before Snakemake's status checks see them (needs >= {MIN_REUSABLE_JOB_AGE})")
        yield running
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster is running, and starting one needs root")
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        pytest.skip(f"{SLURM_CONF} exists but was not written by these tests, and its cluster does not "
                    "answer: not overwriting it")
    if _run("pgrep", "-x", "slurmctld").returncode == 0 or _run("pgrep", "-x", "slurmd").returncode == 0:
        pytest.skip("slurmctld or slurmd is running but the cluster does not answer: not starting a second one")
    t0 = time.monotonic()
    try:
        cluster, daemons = start_cluster(tmp_path_factory.mktemp("slurm_daemons"))
    except RuntimeError as e:
        pytest.fail(str(e))
    print(f"\nSLURM test cluster up in {time.monotonic() - t0:.2f} s "
          f"(partition {cluster.partition}, {cluster.cpus} CPUs)")
    try:
        yield cluster
    finally:
        daemons.stop()
        SLURM_CONF.unlink(missing_ok=True)
