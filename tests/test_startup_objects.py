"""After start-up, full garbage collections no longer walk the objects start-up left alive."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bots.service import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_live_objects_are_frozen_and_garbage_is_collected_first(unfrozen_afterwards: None) -> None:
    live = _Node()
    garbage = _Node()
    garbage.other = _Node()
    garbage.other.other = garbage  # a cycle: only the collector can free it
    gone = weakref.ref(garbage)
    del garbage

    freeze_startup_objects()

    assert gone() is None, "start-up's garbage was frozen instead of freed"
    assert gc.get_freeze_count() > 0
    frozen_before = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() == frozen_before  # a full collection leaves them where they are
    assert not any(tracked is live for tracked in gc.get_objects())  # collections no longer walk it
