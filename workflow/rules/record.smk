# Per batch: simulate every motion (record), then choose the kept attempt per motion (select).
# A record job's inputs are its motions' files, and its params carry the batch's content
# digest and the settings, so adding motions elsewhere never re-records this batch.


rule record:
    input:
        # The plan is read (the batch's members); its rewrite by split must not re-record
        # every batch, so its time stamp is ignored and the batch's digest (params) decides.
        plan=ancient(f"{R}/{{it}}/batches/plan.tsv"),
        sources=ancient(batch_sources),  # their content is in the digest: a touch re-records nothing
        character=api.character_inputs(CFG),
        model=lambda wc: api.tracker_inputs(ITERATIONS[wc.it]["tracker"]),
    output:
        h5=f"{R}/{{it}}/record/{{batch}}/rollouts.h5",
        json=f"{R}/{{it}}/record/{{batch}}/rollouts.json",
        attempts=f"{R}/{{it}}/record/{{batch}}/attempts.tsv",
        terrain=f"{R}/{{it}}/record/{{batch}}/terrain.pkl",
        env=f"{R}/{{it}}/record/{{batch}}/record_env.yaml",
        args=f"{R}/{{it}}/record/{{batch}}/record_args.txt",
        # Declared so that Snakemake stamps it with the outputs' time: a file newer than it was changed.
        integrity=f"{R}/{{it}}/record/{{batch}}/integrity.txt",
    params:
        digest=lambda wc: api.batch_digest(plan_of(wc), wc.batch),
        record=api.json_arg(physrec_config.record_physics_keys(CFG["record"])),
        tracker=lambda wc: api.json_arg(ITERATIONS[wc.it]["tracker"]),
        backend=api.json_arg(physrec_config.backend_spec(CFG)),
        character=CFG["character"],
        seed=CFG["seed"],
        recording_version=api.RECORDING_VERSION,
        # Changes when an output was deleted or changed since this job wrote it (stages/integrity.py).
        integrity=lambda wc: api.record_token(workflow, R, wc.it, wc.batch),
        out=folder_of("h5"),
    threads: lambda wc: api.record_threads(CFG, workflow.cores, len(batch_sources(wc)))
    resources:
        # Each retry (--retries) gets more: a job killed for memory or time is tried bigger.
        mem_mb=lambda wc, attempt: api.record_mem_mb(CFG, wc.it, plan_of(wc), wc.batch) * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
        gpu=api.record_gpus(CFG),
    conda:
        ENV_RECORD
    log:
        "logs/{it}/record/{batch}.log",
    benchmark:
        "benchmarks/{it}/record/{batch}.tsv"
    shell:
        "python -m physrec --log {log} record --plan {input.plan:q} --batch {wildcards.batch}"
        " --record {params.record:q} --tracker {params.tracker:q} --backend {params.backend:q}"
        " --character {params.character:q}"
        " --seed {params.seed} --threads {threads} --out-dir {params.out:q} --integrity-token={params.integrity:q}"


rule select:
    input:
        rollouts=rules.record.output.h5,
        json=rules.record.output.json,
        attempts=rules.record.output.attempts,
        sources=ancient(batch_sources),  # their content is in the digest: a touch re-records nothing
    output:
        selected=f"{R}/{{it}}/select/{{batch}}/selected.tsv",
        motions=directory(f"{R}/{{it}}/select/{{batch}}/motions"),
        integrity=f"{R}/{{it}}/select/{{batch}}/integrity.txt",
    params:
        selection=api.json_arg(physrec_config.selection_keys(CFG["selection"], CFG["record"]["recovery"])),
        selection_version=api.SELECTION_VERSION,
        recording=lambda wc: api.recording_identity(CFG, wc.it, plan_of(wc), wc.batch),
        integrity=lambda wc: api.select_token(workflow, R, wc.it, wc.batch),
        record_dir=lambda wc, input: os.path.dirname(input.rollouts),
        out=folder_of("selected"),
    conda:
        ENV_CPU
    log:
        "logs/{it}/select/{batch}.log",
    benchmark:
        "benchmarks/{it}/select/{batch}.tsv"
    shell:
        "python -m physrec --log {log} select --record-dir {params.record_dir:q} --selection {params.selection:q}"
        " --out-dir {params.out:q} --integrity-token={params.integrity:q}"
