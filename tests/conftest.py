"""Fixtures many test modules share: the built-in character and the demo motions as a batch."""

import pytest

from physrec.demo import demo_motions
from physrec.motion.character import Character
from physrec.recording.data import BatchMotion


@pytest.fixture(scope="session")
def ch() -> Character:
    return Character.load()


@pytest.fixture(scope="session")
def demo_batch() -> list[BatchMotion]:
    return [BatchMotion(name, mf.motion, mf.terrain) for name, mf in demo_motions().items()]
