"""The conda environments of `--sdm conda` ask for what pyproject.toml asks for: a job run in
one of them must import everything a `pip install -e .` would give it."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _pip_entries(name: str) -> list[Requirement]:
    deps = yaml.safe_load((ROOT / "envs" / name).read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return [Requirement(r) for r in pip]


def test_the_cpu_environment_asks_for_exactly_the_package_dependencies():
    want = sorted(str(Requirement(r)) for r in _project()["dependencies"])
    assert sorted(str(r) for r in _pip_entries("record-cpu.yaml")) == want


def test_the_gpu_environment_pins_versions_the_package_accepts():
    pinned = {r.name: r for r in _pip_entries("record-gpu.yaml")}
    wanted = [Requirement(r) for r in _project()["dependencies"] + _project()["optional-dependencies"]["gpu"]]
    for req in wanted:
        assert req.name in pinned, f"envs/record-gpu.yaml lacks {req.name}"
        got = pinned[req.name]
        versions = [s.version for s in got.specifier if s.operator == "=="]
        if versions:  # a pin must be a release the package accepts
            assert req.specifier.contains(versions[0]), f"envs/record-gpu.yaml pins {got}, pyproject wants {req}"
        else:
            assert got.specifier == req.specifier, f"envs/record-gpu.yaml has {got}, pyproject wants {req}"
    assert {"mujoco", "mujoco-warp", "warp-lang"} <= {n for n, r in pinned.items() if "==" in str(r.specifier)}


def test_no_environment_allows_mujoco_4_0_0():
    """4.0.0's sparse-Cholesky bug (wrong accelerations for nv >= 60) is fixed in 4.0.1."""
    for req in [Requirement(r) for r in _project()["dependencies"]] + _pip_entries("record-cpu.yaml") \
            + _pip_entries("record-gpu.yaml"):
        if req.name == "mujoco":
            assert not req.specifier.contains("4.0.0"), req
