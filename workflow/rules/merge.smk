# Merge all batches of an iteration into its recorded motions, manifest, summary and next dataset.


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
        integrity=f"{R}/{{it}}/integrity.txt",
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
        integrity=lambda wc: api.merge_token(workflow, R, wc.it, plan_of(wc)),
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
        " --integrity-token={params.integrity:q}"

