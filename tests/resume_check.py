"""A run stopped part-way and resumed from its ``state_dict`` in a new loader, for the tests
that hold a resumed run equal to an uninterrupted one."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


def stop_and_resume(make: Callable[[], Any], convert: Callable[[Any], T], *, stop_after: int, resumed_epochs: int = 1) -> list[T]:
    """The batches (each through ``convert``) of a loader ``make()`` stopped after
    ``stop_after`` batches, then those of a second ``make()`` given the first one's
    ``state_dict()`` and iterated ``resumed_epochs`` times (the rest of the interrupted epoch
    is the first of them)."""
    partial = make()
    got: list[T] = []
    for batch in partial:
        got.append(convert(batch))
        if len(got) == stop_after:
            break
    resumed = make()
    resumed.load_state_dict(partial.state_dict())
    for _ in range(resumed_epochs):
        got += [convert(batch) for batch in resumed]
    return got
