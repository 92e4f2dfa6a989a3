# Merge all batches of an iteration into its recorded motions, manifest, summary and next dataset;
# then one summary of the whole run across iterations.


rule merge:
    input:
        manifest=f"{R}/{{it}}/dataset/manifest.tsv",
        plan=f"{R}/{{it}}/batches/plan.tsv",
        selected=lambda wc: expand(f"{R}/{wc.it}/select/{{b}}/selected.tsv", b=batches_of(wc)),
        attempts=lambda wc: expand(f"{R}/{wc.it}/record/{{b}}/attempts.tsv", b=batches_of(wc)),
        base=base_dataset_inputs,
        trajectories=lambda wc: expand(f"{R}/{wc.it}/record/{{b}}/rollouts.{{ext}}", b=batches_of(wc),
                                       ext=["h5", "json"]) if MERGED_TRAJECTORIES else [],
    output:
        motions=directory(f"{R}/{{it}}/recorded_motions"),
        manifest=report(f"{R}/{{it}}/manifest.tsv", caption="../report/manifest.rst", category="{it}",
                        subcategory="manifest"),
        summary=f"{R}/{{it}}/summary.json",
        summary_md=f"{R}/{{it}}/summary.md",
        dataset=f"{R}/{{it}}/dataset.yaml",
        # record.merged_trajectories: the iteration's one trajectory file, a target only when it is on.
        **({"trajectories": f"{R}/{{it}}/trajectories.h5", "trajectories_json": f"{R}/{{it}}/trajectories.json"}
           if MERGED_TRAJECTORIES else {}),
    params:
        select_dirs=lambda wc: [f"{R}/{wc.it}/select/{b}" for b in batches_of(wc)],
        record_dirs=lambda wc: [f"{R}/{wc.it}/record/{b}" for b in batches_of(wc)],
        base=lambda wc: api.base_dataset(CFG, wc.it),
        scale=CFG["merge"]["recorded_weight_scale"],
        recordings=lambda wc: api.stable_hash([api.recording_identity(CFG, wc.it, plan_of(wc), b)
                                                for b in batches_of(wc)]),
        trajectories="--trajectories" if MERGED_TRAJECTORIES else "",
        out=folder_of("summary"),
    conda:
        ENV_CPU
    log:
        "logs/{it}/merge.log",
    benchmark:
        "benchmarks/{it}/merge.tsv"
    shell:
        "python -m physrec --log {log} merge --iteration {wildcards.it} --manifest {input.manifest:q} --plan {input.plan:q}"
        " --select-dirs {params.select_dirs:q} --record-dirs {params.record_dirs:q} --base-dataset={params.base:q}"
        " --weight-scale {params.scale} {params.trajectories} --out-dir {params.out:q}"


rule run_summary:
    input:
        summaries=expand(f"{R}/{{it}}/summary.json", it=ITERATIONS),
        datasets=expand(f"{R}/{{it}}/dataset.yaml", it=ITERATIONS),
    output:
        tsv=report(f"{R}/run_summary.tsv", caption="../report/run_summary.rst", category="run"),
        md=f"{R}/run_summary.md",
    params:
        iterations=[f"{name}:{it['tracker']['kind']}" for name, it in ITERATIONS.items()],
        results=R,
    conda:
        ENV_CPU
    log:
        "logs/run_summary.log",
    shell:
        "python -m physrec --log {log} run-summary --results-dir {params.results:q}"
        " --iterations {params.iterations:q} --out-dir {params.results:q}"


# The report's view of an iteration (snakemake --report report.html): its summary page and plots.
rule plots:
    input:
        summary=f"{R}/{{it}}/summary.json",
        manifest=f"{R}/{{it}}/manifest.tsv",
        attempts=lambda wc: expand(f"{R}/{wc.it}/record/{{b}}/attempts.tsv", b=batches_of(wc)),
        rollouts=lambda wc: expand(f"{R}/{wc.it}/record/{{b}}/rollouts.h5", b=batches_of(wc)),
    output:
        summary=report(f"{R}/{{it}}/report/summary.html", caption="../report/summary.rst", category="{it}",
                       subcategory="summary"),
        success=report(f"{R}/{{it}}/report/success_by_start.png", caption="../report/success_by_start.rst",
                       category="{it}", subcategory="plots"),
        errors=report(f"{R}/{{it}}/report/errors_over_time.png", caption="../report/errors_over_time.rst",
                      category="{it}", subcategory="plots"),
        durations=report(f"{R}/{{it}}/report/durations.png", caption="../report/durations.rst",
                         category="{it}", subcategory="plots"),
        failures=report(f"{R}/{{it}}/report/failure_location.png", caption="../report/failure_location.rst",
                        category="{it}", subcategory="plots"),
    params:
        record_dirs=lambda wc: [f"{R}/{wc.it}/record/{b}" for b in batches_of(wc)],
        out=folder_of("success"),
    conda:
        ENV_CPU
    log:
        "logs/{it}/plots.log",
    shell:
        "python -m physrec --log {log} plots --iteration {wildcards.it} --summary {input.summary:q}"
        " --manifest {input.manifest:q} --record-dirs {params.record_dirs:q} --out-dir {params.out:q}"
