# Dataset preparation: the built-in demo, the index (manifest) and the batch plan.


rule demo_dataset:
    output:
        yaml=f"{api.demo_dir(R)}/dataset.yaml",
        motions=api.demo_outputs(R),
    params:
        out=folder_of("yaml"),
    conda:
        ENV_CPU
    log:
        "logs/demo_dataset.log",
    shell:
        "python -m physrec --log {log} demo --out {params.out:q}"


rule index:
    input:
        lambda wc: api.dataset_inputs(ITERATIONS[wc.it]["dataset"], R),
        api.character_inputs(CFG),
    output:
        f"{R}/{{it}}/dataset/manifest.tsv",
    params:
        dataset=lambda wc: api.dataset_yaml(ITERATIONS[wc.it]["dataset"], R),
        character=CFG["character"],
        min_frames=CFG["record"]["min_frames"],
        control_hz=CFG["record"]["control_hz"],
        max_duration=CFG["record"]["max_duration_s"],
        terrain_margin=CFG["record"]["terrain_margin_m"],
        limits=api.json_arg(CFG["limits"]),
    conda:
        ENV_CPU
    log:
        "logs/{it}/index.log",
    benchmark:
        "benchmarks/{it}/index.tsv"
    shell:
        "python -m physrec --log {log} index --dataset {params.dataset:q} --character {params.character:q}"
        " --min-frames {params.min_frames} --control-hz {params.control_hz} --max-duration {params.max_duration}"
        " --terrain-margin {params.terrain_margin}"
        " --limits {params.limits:q} --out {output:q}"


checkpoint split:
    input:
        f"{R}/{{it}}/dataset/manifest.tsv",
    output:
        f"{R}/{{it}}/batches/plan.tsv",
    params:
        batch_size=physrec_config.batch_size(CFG),
    conda:
        ENV_CPU
    log:
        "logs/{it}/split.log",
    benchmark:
        "benchmarks/{it}/split.tsv"
    shell:
        "python -m physrec --log {log} split --manifest {input:q} --batch-size {params.batch_size} --out {output:q}"
