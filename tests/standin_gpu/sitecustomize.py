"""Test hook, on the PYTHONPATH of the Snakemake runs of
tests/test_workflow.py::test_each_gpu_job_gets_a_device_of_its_own only: `backend: mujoco_warp`
with `device: cuda` runs on CPU MuJoCo that claims one of the stand-in GPUs named in
PHYSREC_TEST_STANDIN_GPUS, with the locks a real GPU job takes (physrec.sim.devices). The
workflow itself, declaring gpu=1 per record job, is unchanged.

Nothing is imported at start-up (importing MuJoCo here would run again in every Python process
that a library starts): the backend table is changed when a process imports it."""

import importlib.abc
import importlib.util
import os
import sys


class _RegisterStandin(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "physrec.sim.backend":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.BACKENDS["mujoco_warp"] = "standin_gpu_backend:StandinGPU"

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("PHYSREC_TEST_STANDIN_GPUS"):
    sys.meta_path.insert(0, _RegisterStandin())
