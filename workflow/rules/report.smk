# What the Snakemake report shows (snakemake --report report.html): per iteration its summary
# page, plots and videos; the run summary across iterations.


rule run_summary:
    input:
        summaries=expand(f"{R}/{{it}}/summary.json", it=ITERATIONS),
        datasets=expand(f"{R}/{{it}}/dataset.yaml", it=ITERATIONS),
    output:
        tsv=report(f"{R}/run_summary.tsv", caption="../report/run_summary.rst", category="run"),
        md=f"{R}/run_summary.md",
        plot=report(f"{R}/run_summary.png", caption="../report/run_summary_plot.rst", category="run"),
    params:
        iterations=[f"{name}:{it['tracker']['kind']}" for name, it in ITERATIONS.items()],
        results=folder_of("tsv"),
    conda:
        ENV_CPU
    log:
        "logs/run_summary.log",
    shell:
        "python -m physrec --log {log} run-summary --results-dir {params.results:q}"
        " --iterations {params.iterations:q} --out-dir {params.results:q}"


# An iteration's summary page and plots.
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
        kept_time=report(f"{R}/{{it}}/report/kept_time.png", caption="../report/kept_time.rst",
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



# The videos of a batch (report.videos, report.max_videos): rendered from what was recorded.
if VIDEOS != "none":

    rule videos:
        input:
            rollouts=rules.record.output.h5,
            json=rules.record.output.json,
            selected=rules.select.output.selected,
            sources=ancient(batch_sources),
            character=api.character_inputs(CFG),
        output:
            **video_outputs(),
        params:
            which=VIDEOS,
            per_batch=lambda wc: api.video_quota(CFG, plan_of(wc), wc.batch),
            max_seconds=CFG["report"]["max_video_s"] or 0,
            width=CFG["report"]["video_width"],
            height=CFG["report"]["video_height"],
            record_dir=lambda wc, input: os.path.dirname(input.rollouts),
            out=lambda wc, output: os.path.dirname(output[0]),
        conda:
            ENV_CPU
        log:
            "logs/{it}/videos/{batch}.log",
        benchmark:
            "benchmarks/{it}/videos/{batch}.tsv"
        shell:
            "python -m physrec --log {log} videos --record-dir {params.record_dir:q} --selected {input.selected:q}"
            " --which {params.which} --per-batch {params.per_batch} --width {params.width} --height {params.height}"
            " --max-seconds {params.max_seconds} --out-dir {params.out:q}"
