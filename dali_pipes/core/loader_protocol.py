"""``Loader``: what a training loop may rely on, whichever instance-segmentation loader feeds it.

The local loaders (``CopyPasteLoader`` and its variants in ``dali_pipes/``, ``MosaicLoader``)
and ``RemoteLoader`` (``server/remote_loader.py``) all satisfy it; ``tests/test_loader_contract.py``
checks each one against the same contract: one epoch per iteration of
:class:`~decal.dali_pipes.core.batch.Batch` objects, ``len`` = batches in the coming epoch,
``state_dict()`` after any batch and ``load_state_dict()`` on a fresh loader continue exactly
after that batch.

Every real loader also has ``close()`` (idempotent; it frees the DALI pipeline and its worker
processes, or a remote loader's stream, at once) and is a context manager; a test double need
not be, so code that ends a loader of any kind calls :func:`close_loader`.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

__all__ = ["Loader", "close_loader"]


@runtime_checkable
class Loader(Protocol):
    """An epoch-at-a-time, resumable source of batches."""

    def __iter__(self) -> Iterator[Any]:
        """One epoch of batches; iterate again for the next."""
        ...

    def __len__(self) -> int:
        """Batches in the coming epoch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands (JSON-serialisable: ``epoch``, ``cursor``, ``batch_index``,
        plus what it must match on resume, such as ``seed`` and the shard)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue after the batch at which ``state`` was saved."""
        ...

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of what the loader skipped, dropped or retried (JSON-serialisable; the
        keys are the loader's own, documented on it)."""
        ...

    @property
    def categories(self) -> dict[int, dict]:
        """Category id → the dataset's json category entry."""
        ...


def close_loader(loader: Any) -> None:
    """Call ``loader.close()`` where it has one (every decal loader does; a stand-in may not):
    what the server, the trainers, the bench and the CLI do when they are done with a loader."""
    close = getattr(loader, "close", None)
    if callable(close):
        close()
