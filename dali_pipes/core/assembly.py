"""One builder for every loader: a family's parts in, a loader's parts out.

A loader is dataset + sampler + source + DALI graph + step. A pipeline family (copy-paste,
its variants, mosaic, CutMix, CP²) says how to make each of them from its config, as plain
functions in a :class:`Family`; :func:`assemble` calls them in one order (options → config
→ backend → dataset → sampler → source → steps) and returns the :class:`LoaderParts` that
:class:`~decal.dali_pipes.core.loader_base.PipelineLoader` iterates with. A public loader
class only names its family and its dataset and hands both to the builder (the model is
detectron2's ``from_config``: arguments to parts, parts to the object); a variant is a
family with other parts (``dataclasses.replace``), never a subclass that rebuilds or patches
what its parent built.

Where a family's source depends on the backend (copy-paste: host masks or GPU-mask
descriptors), its ``source`` function is the one place that chooses; its ``graph`` follows
the source it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from .backend import Backend, resolve_backend
from .epoch_source import EpochBatchSource

__all__ = ["Family", "LoaderParts", "assemble", "parse_options", "default_step"]


def default_step(config: Any, dataset: Any) -> Callable[[], Any]:
    """The steps of a family whose graph makes its own step: every pipeline gets ``None``."""
    return lambda: None


@dataclass(frozen=True)
class Family:
    """A pipeline family's parts, each a function the builder calls once per loader (``graph``
    and the maker ``steps`` returns: once per DALI pipeline, at every start or resume).

    Attributes:
        name: what errors call the loader (``"CopyPasteLoader"``).
        config_type: the frozen dataclass the keyword options are parsed into (one field
            per option); it checks them in its ``__post_init__``.
        source: ``(config, dataset, sampler, backend) → EpochBatchSource``.
        graph: ``(source, config, backend, step) → Pipeline``, not yet built; its outputs
            a ``NamedTuple`` of the family (``CopyPasteOutputs``, ...).
        to_batch: ``(outputs, config) → batch``: the family's batch type from one run of
            the graph.
        stats: ``(dataset, source) → dict``: what was skipped or dropped (JSON-serialisable).
        sampler: ``(dataset, config) → sampler`` of the epoch order, or None where the
            source orders the epoch itself (image folders).
        steps: ``(config, dataset) → maker``; ``maker()`` is the step of the next
            pipeline (None: the graph's own). A stateful step (a balanced bank) keeps its
            state in the maker.
    """

    name: str
    config_type: type
    source: Callable[[Any, Any, Any, Backend], EpochBatchSource]
    graph: Callable[[EpochBatchSource, Any, Backend, Any], Any]
    to_batch: Callable[[tuple[Any, ...], Any], Any]
    stats: Callable[[Any, EpochBatchSource], dict[str, Any]]
    sampler: Callable[[Any, Any], Any] | None = None
    steps: Callable[[Any, Any], Callable[[], Any]] = default_step


@dataclass(frozen=True)
class LoaderParts:
    """A loader's parts, made by :func:`assemble`: what :class:`PipelineLoader` holds."""

    family: Family
    config: Any
    backend: Backend
    dataset: Any
    sampler: Any
    source: EpochBatchSource
    steps: Callable[[], Any]


def parse_options(family: Family, options: dict[str, Any]) -> Any:
    """``options`` parsed into ``family.config_type`` (checked there); an unknown one is a
    TypeError naming the loader, as for any Python call."""
    unknown = set(options) - {f.name for f in fields(family.config_type)}
    if unknown:
        raise TypeError(f"{family.name} got unknown options {sorted(unknown)}")
    return family.config_type(**options)


def assemble(family: Family, options: dict[str, Any], dataset: Callable[[Any], Any]) -> LoaderParts:
    """The parts of one loader of ``family``: parse ``options``, resolve the backend, read the
    dataset (``dataset(config)``), then make the sampler, the source and the step maker."""
    config = parse_options(family, options)
    backend = resolve_backend(config.device)
    data = dataset(config)
    sampler = family.sampler(data, config) if family.sampler is not None else None
    source = family.source(config, data, sampler, backend)
    return LoaderParts(family, config, backend, data, sampler, source, family.steps(config, data))
