# Input functions shared by the rules (paths only; the package does the work).
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
