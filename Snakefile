# physrec: record physics-based versions of kinematic motions (stage 4 of the PARC loop).
# Wiring only: every rule calls the physrec command line (python -m physrec); the logic lives in workflow/physrec.
import re

from physrec import config as physrec_config
from physrec import workflow_api as api
from physrec.render import VIDEO_KINDS
from snakemake.exceptions import WorkflowError


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


try:
    CFG = physrec_config.validate(config, "config")
    physrec_config.check_files(CFG)
except physrec_config.ConfigError as e:
    raise WorkflowError(str(e))

R = CFG["results_dir"]
api.export_package_source(f"{workflow.basedir}/workflow")
ENV_CPU = "../../envs/record-cpu.yaml"
ENV_RECORD = "../../envs/record-gpu.yaml" if CFG["backend"] == "mujoco_warp" else ENV_CPU
ITERATIONS = {it["name"]: it for it in CFG["iterations"]}
MERGED_TRAJECTORIES = CFG["record"]["merged_trajectories"]
VIDEOS = CFG["report"]["videos"]


wildcard_constraints:
    it="|".join(re.escape(name) for name in ITERATIONS),
    batch=r"b[0-9a-f]{10}",


rule all:
    input:
        expand(
            f"{R}/{{it}}/{{out}}",
            it=ITERATIONS,
            out=["summary.json", "summary.md", "dataset.yaml", "manifest.tsv", "report/summary.html",
                 "report/success_by_start.png", "report/errors_over_time.png", "report/durations.png",
                 "report/failure_location.png"],
        ),
        f"{R}/run_summary.tsv",
        f"{R}/run_summary.md",
        f"{R}/run_summary.png",
        lambda wc: [d for it in ITERATIONS for d in api.video_dirs(CFG, R, it, checkpoints.split.get(it=it).output[0])],


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/record.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/report.smk"
