"""A CPU policy's rows in chunks: full chunks of POLICY_CHUNK_ROWS, and short ones (a pass of few
environments) padded only to a multiple of POLICY_PAD_ROWS where that gives the same bits."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

import pytest
import torch

from physrec.trackers.parc_policy import build_actor, check_state, random_state_dict
from physrec.trackers.policy import POLICY_CHUNK_ROWS, POLICY_PAD_ROWS, PolicyTracker


def _obs(rows: int, size: int = 1312) -> torch.Tensor:
    return torch.randn(rows, size, generator=torch.Generator().manual_seed(rows)) * 3


def _calls(tracker: PolicyTracker, monkeypatch) -> list[int]:
    """Row counts of the policy's calls, recorded from now on."""
    rows: list[int] = []
    real = tracker.policy
    monkeypatch.setattr(tracker, "policy", lambda x: rows.append(len(x)) or real(x))
    return rows


def test_a_policy_whose_rows_depend_on_the_call_keeps_full_chunks():
    """Rows that change with the call's row count (here by design): every chunk padded to 32
    rows, as before, so a row's bits never depend on how many environments share its pass."""
    tracker = PolicyTracker("exported", lambda x: x[:, :28] + len(x), "parc", "depends on the row count")
    out = tracker.act(SimpleNamespace(obs=_obs(5)))
    assert tracker._pad_rows == 0
    np.testing.assert_allclose(out[:, 0] - _obs(5)[:, :28].double().numpy(), POLICY_CHUNK_ROWS, atol=1e-4)


def _parc_actor() -> PolicyTracker:
    """PARC's actor (PARC's widths, random weights), its short-chunk check run; skips where this
    machine's kernels give rows other bits in short calls (full chunks stay)."""
    state = check_state(random_state_dict(1312, 28), 1312, 28, Path("<random>"))
    tracker = PolicyTracker("parc", build_actor(state), "parc", "PARC-size actor")
    tracker.act(SimpleNamespace(obs=_obs(1)))  # the check, once
    if tracker._pad_rows != POLICY_PAD_ROWS:
        pytest.skip("this machine's kernels give rows other bits in calls of 8 rows: full chunks stay")
    return tracker


def test_a_parc_actor_pads_short_chunks_less_with_the_same_bits(monkeypatch):
    """PARC's actor (PARC's widths, random weights): 5 rows go in one call of 8, 37 rows in 32 + 8,
    and every row has the bits it has in a full chunk of 32."""
    tracker = _parc_actor()
    calls = _calls(tracker, monkeypatch)
    for n, expected in ((5, [8]), (37, [32, 8])):
        calls.clear()
        obs = _obs(n)
        got = tracker.act(SimpleNamespace(obs=obs))
        assert calls == expected
        with torch.inference_mode():
            padded = torch.cat([obs, obs.new_zeros(-n % POLICY_CHUNK_ROWS, obs.shape[1])])
            full = torch.cat([tracker.policy(c) for c in padded.split(POLICY_CHUNK_ROWS)])[:n]
        assert torch.equal(torch.as_tensor(got[:, 0]), full.double())


def test_a_parc_actor_gives_every_thread_a_call_with_the_same_bits(monkeypatch):
    """On 2 threads, 32 rows (a pass's last environments) go in two calls of 16, 20 in 16 + 8 and
    64 in two of 32; on 4 threads 40 rows in 16 + 16 + 8; every row with the bits of one thread's
    full chunks of 32."""
    from physrec.trackers.policy import limit_torch_threads
    limit_torch_threads(1)
    tracker = _parc_actor()
    calls = _calls(tracker, monkeypatch)
    for threads, n, expected in ((2, 32, [16, 16]), (2, 20, [16, 8]), (2, 64, [32, 32]), (4, 40, [16, 16, 8])):
        obs = _obs(n)
        tracker.use_threads(1)
        one = tracker.act(SimpleNamespace(obs=obs))
        tracker.use_threads(threads)
        calls.clear()
        assert np.array_equal(tracker.act(SimpleNamespace(obs=obs)), one) and sorted(calls, reverse=True) == expected
