# Input functions and output helpers shared by the rules (paths only; the package does the work).
import os


def plan_of(wc):
    return checkpoints.split.get(it=wc.it).output[0]


def batch_sources(wc):
    return api.batch_sources(plan_of(wc), wc.batch)


def batches_of(wc):
    return api.batch_ids(plan_of(wc))


def base_dataset_inputs(wc):
    base = api.base_dataset(CFG, wc.it)
    return [base] if base else []


def folder_of(key):
    """Param: the folder holding output `key` (so prefixes follow the outputs, not hard-coded)."""
    return lambda wc, output: os.path.dirname(output[key])


def video_outputs():
    """One folder per kind of video that report.videos asks for; the report shows each <motion>.html in it."""
    return {kind: report(directory(f"{R}/{{it}}/report/videos/{{batch}}/{kind}"), patterns=["{motion}.html"],
                         caption=f"../report/video_{kind}.rst", category="{it}", subcategory=f"videos: {kind}",
                         labels={"motion": "{motion}", "batch": "{batch}"})
            for kind in VIDEO_KINDS[VIDEOS]}
