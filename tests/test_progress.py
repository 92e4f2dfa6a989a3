"""A pass's progress lines: the time left comes from the simulator loop's own rate."""

from physrec import progress


def test_time_left_ignores_a_search_before_the_first_step(monkeypatch):
    """A planned pass searches (here 600 s) before its first simulator call; the time left is
    then the loop's: 10 of 100 steps in 1 s leave about 9 s, not the ~6000 s the pass's whole
    elapsed time would give."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setenv("PHYSREC_PROGRESS", "lines")
    said = []
    p = progress.PassProgress(said.append, "[b] pass 1/1", total=2, every=0.5)
    clock[0] = 600.0
    p.tick(0, 100, 2, 1 / 30)  # the first call after the search: no rate yet
    clock[0] = 601.0
    p.tick(10, 100, 2, 1 / 30)
    assert said and said[-1].endswith("~9 s left"), said
