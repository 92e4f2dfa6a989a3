"""CPU MuJoCo standing in for a GPU job: it claims a stand-in device as MuJoCo Warp claims its GPU."""

import os

from physrec.sim.backend import BackendSpec
from physrec.sim.devices import claim_for_job
from physrec.sim.mujoco import MujocoBackend


class StandinGPU(MujocoBackend):
    def __init__(self, spec: BackendSpec, *args, **kwargs) -> None:
        claim_for_job(os.environ["PHYSREC_TEST_STANDIN_GPUS"].split(","))
        super().__init__(BackendSpec(threads=spec.threads), *args, **kwargs)


def tensor_device(spec: BackendSpec) -> str:
    return "cpu"
