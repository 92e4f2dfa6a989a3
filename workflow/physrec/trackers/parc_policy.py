"""``parc``: a tracker trained by PARC's stage 3, loaded from its ``model.pt``.

The checkpoint is ``torch.save(agent.state_dict())`` of PARC's ``DMPPOAgent``: observation
and action normalisers, the actor trunk ``_model._actor_layers.{0,2,4}`` (Linear layers,
ReLU after each), the Gaussian head ``_model._action_dist._mean_net`` and its fixed
log-std, and a critic that recording does not need. PARC's test-time action is the
Gaussian mean: ``a = mean_net(trunk(clip((obs - mean) / std, -10, 10))) * a_std + a_mean``;
the recorder then clips it to the PD bounds. Layer widths come from the weights.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from physrec.motion.character import Character
from physrec.observations import observation_size
from physrec.trackers.base import TrackerError
from physrec.trackers.model_files import load_tensors, read_model
from physrec.trackers.policy import PolicyTracker, check_policy, describe_model, model_path

OBSERVATION = "parc"
OBS_NORM_CLIP = 10.0  # PARC's norm_obs_clip; not saved in the checkpoint
_TRUNK = re.compile(r"_model\._actor_layers\.(\d+)\.weight")
_IGNORED_PREFIXES = ("_model._critic_layers.", "_model._critic_out.")


class ParcActor(nn.Module):
    """PARC's actor at test time: normalised observation -> de-normalised Gaussian mean."""

    def __init__(self, obs_mean: torch.Tensor, obs_std: torch.Tensor, a_mean: torch.Tensor, a_std: torch.Tensor,
                 trunk: list[nn.Linear], head: nn.Linear) -> None:
        super().__init__()
        for name, value in (("obs_mean", obs_mean), ("obs_std", obs_std), ("a_mean", a_mean), ("a_std", a_std)):
            self.register_buffer(name, value.detach().clone())
        self.trunk = nn.ModuleList(trunk)
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = torch.clamp((obs - self.obs_mean) / self.obs_std, -OBS_NORM_CLIP, OBS_NORM_CLIP)
        for layer in self.trunk:
            x = torch.relu(layer(x))
        return self.head(x) * self.a_std + self.a_mean

    @property
    def widths(self) -> list[int]:
        return [layer.out_features for layer in self.trunk]


def expected_shapes(state: Mapping, obs_size: int, num_dof: int, path: Path) -> "OrderedDict[str, tuple[int, ...]]":
    """Every key the actor needs with its shape; trunk widths are read off the weights."""
    trunk = sorted(int(m.group(1)) for k in state if (m := _TRUNK.fullmatch(str(k))))
    if any(i % 2 for i in trunk):
        raise TrackerError(f"{path}: actor layers {trunk} are not PARC's layout (Linear layers at 0, 2, 4, ... "
                           "with ReLU between)")
    gap = next((i for i in range(0, (trunk[-1] if trunk else 0) + 1, 2) if i not in trunk), None)
    if gap is not None:
        raise TrackerError(f"{path}: missing key _model._actor_layers.{gap}.weight")
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict([
        ("_obs_norm._count", (1,)), ("_obs_norm._mean", (obs_size,)), ("_obs_norm._std", (obs_size,)),
        ("_a_norm._count", (1,)), ("_a_norm._mean", (num_dof,)), ("_a_norm._std", (num_dof,))])
    width = obs_size
    for i in trunk:
        w = state[f"_model._actor_layers.{i}.weight"]
        out = int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 2 else -1
        shapes[f"_model._actor_layers.{i}.weight"] = (out, width)
        shapes[f"_model._actor_layers.{i}.bias"] = (out,)
        width = out
    shapes["_model._action_dist._logstd_net"] = (num_dof,)
    shapes["_model._action_dist._mean_net.weight"] = (num_dof, width)
    shapes["_model._action_dist._mean_net.bias"] = (num_dof,)
    return shapes


def check_state(state: object, obs_size: int, num_dof: int, path: Path) -> "OrderedDict[str, torch.Tensor]":
    """The actor's tensors, after checking every key, shape and value; the first problem is the error."""
    if not isinstance(state, Mapping):
        raise TrackerError(f"{path}: not a PARC tracker checkpoint: holds a {type(state).__name__}, "
                           "expected a state_dict")
    shapes = expected_shapes(state, obs_size, num_dof, path)
    for key in state:
        if key not in shapes and not str(key).startswith(_IGNORED_PREFIXES):
            raise TrackerError(f"{path}: unexpected key {key!r} (not in PARC's DMPPOAgent layout)")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in shapes.items():
        if key not in state:
            raise TrackerError(f"{path}: missing key {key}")
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise TrackerError(f"{path}: {key} is a {type(value).__name__}, expected a tensor")
        if tuple(value.shape) != shape:
            hint = " (the policy was trained for another observation or character)" if key.endswith(
                ("_obs_norm._mean", "_actor_layers.0.weight", "_a_norm._mean", "_mean_net.weight")) else ""
            raise TrackerError(f"{path}: {key} has shape {tuple(value.shape)}, expected {shape}{hint}")
        if not key.endswith("_count"):
            if not value.is_floating_point():
                raise TrackerError(f"{path}: {key} has dtype {value.dtype}, expected a floating-point tensor")
            if not torch.isfinite(value).all():
                raise TrackerError(f"{path}: {key} has non-finite values")
        out[key] = value
    for key in ("_obs_norm._std", "_a_norm._std"):
        if (out[key] <= 0).any():
            raise TrackerError(f"{path}: {key} has values <= 0 (a normaliser's std must be positive)")
    return out


def build_actor(state: "OrderedDict[str, torch.Tensor]", device: str = "cpu") -> ParcActor:
    """PARC's actor from checked state_dict tensors (:func:`check_state`), float32, eval mode."""

    def linear(prefix: str) -> nn.Linear:
        w, b = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
        layer = nn.Linear(w.shape[1], w.shape[0], device=device)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        return layer

    trunk = [linear(k.removesuffix(".weight")) for k in state if _TRUNK.fullmatch(k)]
    norms = [state[k].to(device, torch.float32) for k in ("_obs_norm._mean", "_obs_norm._std", "_a_norm._mean",
                                                          "_a_norm._std")]
    actor = ParcActor(*norms, trunk, linear("_model._action_dist._mean_net"))
    return actor.float().eval().requires_grad_(False)


def load_actor(path: Path, obs_size: int, num_dof: int, device: str = "cpu") -> ParcActor:
    """PARC's actor from its checkpoint, every key and shape checked first."""
    return build_actor(check_state(load_tensors(read_model(path), device, str(path)), obs_size, num_dof, path), device)


def make(spec: dict, character: Character, device: str = "cpu") -> PolicyTracker:
    path = model_path(spec)
    actor = load_actor(path, observation_size(OBSERVATION, character), character.num_dof, device)
    check_policy(actor, str(path), character, OBSERVATION, device)
    widths = "x".join(str(w) for w in actor.widths)
    return PolicyTracker("parc", actor, OBSERVATION,
                         describe_model("parc", path, f"PARC actor {widths}, Gaussian mean"))


def random_state_dict(obs_size: int, num_dof: int, widths: tuple[int, ...] = (2048, 1024, 512),
                      seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A checkpoint in PARC's exact layout (23 keys for 3 layers, critic included) with random
    weights: what benchmarks and tests use where no trained model is at hand."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state: OrderedDict[str, torch.Tensor] = OrderedDict([
        ("_obs_norm._count", torch.tensor([4096])), ("_obs_norm._mean", randn(obs_size, scale=0.1)),
        ("_obs_norm._std", randn(obs_size).abs() + 0.1), ("_a_norm._count", torch.tensor([0])),
        ("_a_norm._mean", torch.zeros(num_dof)), ("_a_norm._std", torch.ones(num_dof))])
    for prefix in ("_model._actor_layers", "_model._critic_layers"):
        width = obs_size
        for i, out in enumerate(widths):
            state[f"{prefix}.{2 * i}.weight"] = randn(out, width, scale=width ** -0.5)
            state[f"{prefix}.{2 * i}.bias"] = torch.zeros(out)
            width = out
        if prefix == "_model._actor_layers":
            state["_model._action_dist._logstd_net"] = torch.full((num_dof,), math.log(0.05))
            state["_model._action_dist._mean_net.weight"] = randn(num_dof, width, scale=0.25 * width ** -0.5)
            state["_model._action_dist._mean_net.bias"] = torch.zeros(num_dof)
    state["_model._critic_out.weight"] = randn(1, widths[-1], scale=widths[-1] ** -0.5)
    state["_model._critic_out.bias"] = torch.zeros(1)
    return state
