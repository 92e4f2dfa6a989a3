import bisect

import pytest

from physrec.stages.splitting import MAX_FACTOR, _runs, name_key, plan_batches


def _names(n, prefix="motion"):
    return [f"{prefix}_{i:05d}" for i in range(n)]


def _neighbours(old_names, new_name):
    """The motions just before and after ``new_name`` in circular key order."""
    keyed = sorted((name_key(n), n) for n in old_names)
    i = bisect.bisect(keyed, (name_key(new_name), new_name))
    return {keyed[(i - 1) % len(keyed)][1], keyed[i % len(keyed)][1]}


def _check_partition(plan, names):
    members = [n for batch in plan.values() for n in batch]
    assert sorted(members) == sorted(names)  # every name exactly once
    assert all(plan.values())  # no empty batch


def test_deterministic_and_order_independent():
    names = _names(300)
    plan = plan_batches(names, 8)
    assert plan == plan_batches(list(reversed(names)), 8)
    assert list(plan) == sorted(plan)
    for batch in plan.values():
        assert batch == sorted(batch, key=name_key)
    _check_partition(plan, names)


def test_adding_a_motion_keeps_other_batches():
    names = _names(200)
    old = plan_batches(names, 8)
    new_name = "motion_new"
    new = plan_batches(names + [new_name], 8)
    same = [bid for bid, members in old.items() if new.get(bid) == members]
    assert len(same) >= 0.9 * len(old)


def _receiving_run(names, batch_size, new_name):
    """Members of the top-level run a new motion joins: the run of its successor in key order."""
    keyed = sorted((name_key(n), n) for n in names)
    successor = next((n for k, n in keyed if (k, n) > (name_key(new_name), new_name)), keyed[0][1])
    return next({n for _, n in run} for _, run in _runs(keyed, batch_size, 0) if successor in {n for _, n in run})


@pytest.mark.parametrize("batch_size", [2, 3, 8, 20])
def test_only_motions_of_the_receiving_run_change_batch(batch_size):
    """Adding a motion leaves every batch outside the one run it joins exactly as it was, also
    when that run is long enough to be cut again (small batch sizes make such runs common)."""
    names = _names(400)
    old = plan_batches(names, batch_size)
    for j in range(60):
        new_name = f"added_{j}"
        new = plan_batches(names + [new_name], batch_size)
        _check_partition(new, names + [new_name])
        run = _receiving_run(names, batch_size, new_name)
        for bid, members in old.items():
            if not set(members) & run:
                assert new.get(bid) == members, (new_name, bid)
            else:
                assert set(members) <= run  # batches never straddle runs


def test_mean_batch_size_for_large_dataset():
    names = _names(2000)
    plan = plan_batches(names, 16)
    _check_partition(plan, names)
    mean = len(names) / len(plan)
    assert 0.7 * 16 <= mean <= 1.3 * 16
    assert max(len(b) for b in plan.values()) <= 4 * 16


def test_small_dataset_without_cut_point():
    names = ["a", "b"]
    keys = [int(name_key(n)[16:32], 16) for n in names]
    batch_size = next(s for s in range(2, 1000) if all(k % s for k in keys))
    assert plan_batches(names, batch_size) == {"b0000000000": sorted(names, key=name_key)}
    assert plan_batches([], 8) == {}


def test_batch_size_one_gives_singletons():
    plan = plan_batches(_names(10), 1)
    assert sorted(len(b) for b in plan.values()) == [1] * 10
    assert all(bid == "b" + name_key(b[0])[:10] for bid, b in plan.items())


def test_long_runs_are_cut_again():
    names = _names(3000)
    keyed = sorted((name_key(n), n) for n in names)
    assert any(len(run) > MAX_FACTOR * 4 for _, run in _runs(keyed, 4, 0)), "expected a long top-level run"
    plan = plan_batches(names, 4)
    assert max(len(b) for b in plan.values()) <= MAX_FACTOR * 4
    _check_partition(plan, names)


def test_invalid_input():
    with pytest.raises(ValueError, match="duplicate motion names: a"):
        plan_batches(["a", "b", "a"], 4)
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(["a"], 0)
