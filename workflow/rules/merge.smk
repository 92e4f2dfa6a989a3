# Merge all batches of an iteration into its recorded motions, manifest, summary and next dataset;
# then one summary of the whole run across iterations.


rule merge:
    input:
        manifest=f"{R}/{{it}}/dataset/manifest.tsv",
        plan=f"{R}/{{it}}/batches/plan.tsv",
        selected=lambda wc: expand(f"{R}/{wc.it}/select/{{b}}/selected.tsv", b=batches_of(wc)),
        attempts=lambda wc: expand(f"{R}/{wc.it}/record/{{b}}/attempts.tsv", b=batches_of(wc)),
        base=base_dataset_inputs,
    output:
        motions=directory(f"{R}/{{it}}/recorded_motions"),
        manifest=f"{R}/{{it}}/manifest.tsv",
        summary=f"{R}/{{it}}/summary.json",
        summary_md=f"{R}/{{it}}/summary.md",
        dataset=f"{R}/{{it}}/dataset.yaml",
    params:
        select_dirs=lambda wc: [f"{R}/{wc.it}/select/{b}" for b in batches_of(wc)],
        record_dirs=lambda wc: [f"{R}/{wc.it}/record/{b}" for b in batches_of(wc)],
        base=lambda wc: api.base_dataset(CFG, wc.it),
        scale=CFG["merge"]["recorded_weight_scale"],
        recordings=lambda wc: api.stable_hash([api.recording_identity(CFG, wc.it, plan_of(wc), b)
                                                for b in batches_of(wc)]),
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
        " --weight-scale {params.scale} --out-dir {params.out:q}"


rule run_summary:
    input:
        summaries=expand(f"{R}/{{it}}/summary.json", it=ITERATIONS),
        datasets=expand(f"{R}/{{it}}/dataset.yaml", it=ITERATIONS),
    output:
        tsv=f"{R}/run_summary.tsv",
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
