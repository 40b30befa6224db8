"""What every decal torch iterator shares (``CopyPasteLoader``, ``CutMixLoader``,
``CP2Loader``, ...): epochs, resume, error recovery, and DLPack conversion of DALI outputs.

A loader is its parts (:class:`~decal.dali_pipes.core.assembly.LoaderParts`, made by
:func:`~decal.dali_pipes.core.assembly.assemble`); :class:`PipelineLoader` iterates over them.
The public loader classes pass it their parts and add accessors only (as DALI's
``_DaliBaseIterator`` subclasses add only ``__next__``).

Epochs follow DALI's convention: iterating the loader yields one epoch; iterate again for
the next. ``len(loader)`` is the number of batches in the coming epoch. ``state_dict()``
after any batch, and ``load_state_dict()`` on a fresh loader with the same seed and shard,
continue exactly after that batch. Tensors come out of DALI through DLPack, on the GPU when
the pipeline runs there.

``close()`` (or leaving a ``with loader:`` block) shuts the loader's DALI pipeline down at
once, with its parallel-source worker processes and their shared memory
(:func:`~decal.dali_pipes.core.pipeline_release.release_pipeline`), instead of when a garbage
collection finds it; a closed loader refuses to iterate. A pipeline the loader drops on its
own (``load_state_dict``, error recovery) is released the same way.
"""

from __future__ import annotations

import traceback
import warnings
from types import TracebackType
from typing import Any, Iterator

import torch

from .assembly import LoaderParts
from .epoch_source import EpochBatchSource, LoaderPosition, PositionRow
from .parallel_source import expect_worker_batches
from .pipeline_release import release_pipeline

__all__ = ["PipelineLoader", "position_after", "dense", "dlpack_stream", "torch_samples"]

#: DLPack's device type of CUDA memory (``__dlpack_device__()[0]``).
_DLPACK_CUDA = 2


def dense(output: Any, device: torch.device | None = None) -> torch.Tensor:
    """A DALI TensorList of equal shapes as one torch tensor (zero-copy through DLPack),
    moved to ``device`` if given."""
    tensor = torch.from_dlpack(output.as_tensor())
    return tensor if device is None or tensor.device == device else tensor.to(device, non_blocking=True)


def dlpack_stream(output: Any) -> int | None:
    """The ``stream`` argument with which torch would take the samples of a DALI TensorList
    (``torch.from_dlpack``'s rule): on CUDA, torch's current stream of that device (1 for the
    legacy default stream), so DALI orders its work before it; None on the host. Look it up
    once per batch and pass it to :func:`torch_samples`."""
    kind, device_id = output[0].__dlpack_device__() if len(output) else (1, 0)
    if int(kind) != _DLPACK_CUDA:
        return None
    handle = torch.cuda.current_stream(int(device_id)).cuda_stream
    return 1 if handle == 0 else handle


def torch_samples(output: Any, count: int, stream: int | None) -> list[torch.Tensor]:
    """The first ``count`` samples of a DALI TensorList as torch tensors (zero-copy through
    DLPack), with ``stream`` from :func:`dlpack_stream` (one lookup per batch, not one per
    tensor; ``torch.from_dlpack`` per sample would also retry DALI's ``__dlpack__`` with
    each keyword it knows)."""
    from_capsule = torch.utils.dlpack.from_dlpack
    if stream is None:
        return [from_capsule(output[i].__dlpack__()) for i in range(count)]
    return [from_capsule(output[i].__dlpack__(stream=stream)) for i in range(count)]


def position_after(position_output: Any) -> LoaderPosition:
    """The loader position after the batch whose ``position`` column is given."""
    return PositionRow.from_array(position_output[0]).after()


class PipelineLoader:
    """Iteration, resume and recovery over a loader's ``parts``: a DALI pipeline (the family's
    ``graph``, built again at every start or resume) fed by an :class:`EpochBatchSource`.

    Attributes (from ``parts``): ``config`` (with ``seed``, ``shard_id``, ``num_shards``,
    ``on_error``), ``backend`` (``"cpu"`` or ``"gpu"``), ``dataset``, ``sampler`` (None
    where the source orders the epoch itself) and ``source``.
    """

    def __init__(self, parts: LoaderParts) -> None:
        self.parts = parts
        self.config: Any = parts.config
        self.backend: str = parts.backend
        self.dataset: Any = parts.dataset
        self.sampler: Any = parts.sampler
        self.source: EpochBatchSource = parts.source
        self._pipeline: Any = None
        self._position = LoaderPosition()
        self._closed = False

    @property
    def stats(self) -> dict[str, Any]:
        """What was skipped or dropped so far (the family's counters; JSON-serialisable)."""
        return self.parts.family.stats(self.dataset, self.source)

    # -- what a server streaming this loader reads ------------------------------------
    def epoch_length(self, epoch: int) -> int:
        """Entries of this shard's order for ``epoch`` (a resume cursor is at most this)."""
        return int(len(self.source.epoch_order(epoch)))

    @property
    def built_pipeline(self) -> Any:
        """The DALI pipeline iterating builds (None before the first batch or after a
        resume/recovery dropped it). A server holds it weakly to free it with its stream."""
        return self._pipeline

    # -- resume ------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._position.epoch

    def state_dict(self) -> dict[str, Any]:
        """The position after the last delivered batch, plus the seed and shard it holds for."""
        cfg = self.config
        return {
            **self.source.normalize(self._position).to_dict(),
            "seed": cfg.seed,
            "shard_id": cfg.shard_id,
            "num_shards": cfg.num_shards,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batch at which ``state`` was saved (same seed and shard)."""
        cfg = self.config
        for key in ("seed", "shard_id", "num_shards"):
            if key in state and int(state[key]) != getattr(cfg, key):
                raise ValueError(
                    f"loader state: field '{key}' is {state[key]} but this loader has {getattr(cfg, key)}"
                )
        self._position = self.source.normalize(LoaderPosition.from_dict(state))
        self._drop_pipeline()

    # -- closing -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Shut the DALI pipeline down now: its executor, its parallel-source worker processes
        (gone when this returns) and their shared memory. Batches already delivered stay
        valid; iterating afterwards raises RuntimeError. Calling it again does nothing."""
        self._closed = True
        self._drop_pipeline()

    def __enter__(self) -> "PipelineLoader":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; make a new loader (load_state_dict resumes it)")

    # -- iteration ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self.source.batches_in_epoch(self._position.epoch)

    def __iter__(self) -> Iterator[Any]:
        self._check_open()
        self._warn_if_empty()
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        """The rest of the current epoch. The pipeline is looked up at every step and not held
        across a ``yield``, so a suspended iterator does not keep a closed loader's pipeline
        (and its worker pool's semaphores) alive. Nor does an error this raises (the
        DatasetError of a corrupt image, held by a caller or caught by the server): the frames
        of its traceback hold neither the dropped pipeline nor an exception that refers back to
        them, so the pipeline is freed by reference counting, not left in a cycle for a later
        garbage collection (``tests/test_loader_close.py``)."""
        while True:
            self._check_open()
            pipeline = self._ensure_pipeline()
            try:
                outputs = pipeline.run()
            except StopIteration:
                pipeline.reset()
                self._position = LoaderPosition(self._position.epoch + 1, 0, 0)
                return
            except RuntimeError as error:
                del pipeline  # dropped by _recover; an error raised from here must not hold it
                traceback.clear_frames(error.__traceback__)  # DALI's run() frames hold it as self
                self._recover(error)
                continue
            batch = self._to_batch(outputs)
            self._position = batch.position
            del outputs, pipeline
            yield batch

    # -- internals ---------------------------------------------------------------------
    def _warn_if_empty(self) -> None:
        """Warn (once per loader) when the coming epoch has no batch for this shard, e.g.
        ``batch_size`` larger than the shard with ``drop_last=True``."""
        if getattr(self, "_empty_warned", False) or len(self) > 0:
            return
        self._empty_warned = True
        source = self.source
        images = len(source.epoch_order(self._position.epoch))
        warnings.warn(
            f"{type(self).__name__}: epoch {self._position.epoch} has 0 batches: shard {source.shard_id} of "
            f"{source.num_shards} holds {images} images, batch_size={source.batch_size}, "
            f"drop_last={source.drop_last}; lower batch_size or set drop_last=False",
            stacklevel=3,
        )

    def _drop_pipeline(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            release_pipeline(pipeline)

    def _ensure_pipeline(self) -> Any:
        if self._pipeline is None:
            self.source.restart(self._position)
            self._pipeline = self._build_pipeline()
            self._pipeline.build()
        return self._pipeline

    def _build_pipeline(self) -> Any:
        parts = self.parts
        return parts.family.graph(self.source, self.config, self.backend, parts.steps())

    def _to_batch(self, outputs: tuple[Any, ...]) -> Any:
        return self.parts.family.to_batch(outputs, self.config)

    def _recover(self, error: RuntimeError) -> None:
        """A DALI failure (a corrupt file whose header parsed): find and name the file.

        Every image of the batches produced since the last restart is decoded with PIL. With
        ``on_error="skip"`` the culprit is skipped, counted as ``"corrupt image"`` and the
        pipeline rebuilt at the last delivered position; otherwise its DatasetError is raised.
        With source workers (``config.source_workers``), the suspects are the batches they may
        have made since the last delivered one.
        """
        workers = getattr(self.config, "source_workers", 0)
        if workers:
            expect_worker_batches(self.source, self._position, self.config.prefetch_queue_depth, workers)
        self._drop_pipeline()
        suspects = self.source.suspects()
        for dataset, index in suspects:
            problem = dataset.decode_check(index)
            if problem is None:
                continue
            if self.config.on_error == "raise":
                try:
                    raise problem from error
                finally:
                    del problem  # this frame is in its traceback: no frame <-> error cycle
            self.source.mark_bad(dataset, index, "corrupt image")
            return
        files = sorted({str(dataset[index].path) for dataset, index in suspects})
        raise RuntimeError(f"DALI pipeline failed on a batch holding {files}: {error}") from error
