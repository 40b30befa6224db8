"""One builder assembles every loader from its family's parts (``dali_pipes/core/assembly.py``):
the order of the parts, one source per loader, the source chosen in one place, and variants
that are other parts rather than subclasses."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch

from decal.dali_pipes.balanced.loader import BALANCED, BalancedCopyPasteLoader
from decal.dali_pipes.coco.loader import CocoPipelineLoader, coco_dataset
from decal.dali_pipes.copy_paste.gpu_masks import GpuMaskCopyPasteSource
from decal.dali_pipes.copy_paste.loader import COPY_PASTE, CopyPasteLoader, GpuMaskCopyPasteLoader
from decal.dali_pipes.copy_paste.source import CopyPasteSource
from decal.dali_pipes.core.assembly import Family, assemble
from decal.dali_pipes.core.epoch_source import EpochBatchSource

from coco_factory import write_coco_dataset

KW = dict(batch_size=3, output_size=48, device="cpu", num_threads=1, seed=6)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("assembly"), num_images=7, instances_per_image=(0, 4), seed=5)


@dataclass(frozen=True)
class _Config:
    device: str = "cpu"
    size: int = 1

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("size must be >= 1")


def test_assemble_makes_the_parts_in_order_from_the_parsed_config() -> None:
    calls: list[tuple[str, Any]] = []

    def record(name: str, value: Any) -> Any:
        calls.append((name, value))
        return value

    family = Family(
        name="ToyLoader",
        config_type=_Config,
        source=lambda cfg, data, sampler, backend: record("source", (data, sampler, backend)),
        graph=lambda *args: record("graph", args),
        to_batch=lambda outputs, cfg: outputs,
        stats=lambda data, source: {},
        sampler=lambda data, cfg: record("sampler", (data, cfg.size)),
        steps=lambda cfg, data: record("steps", lambda: "step"),
    )
    parts = assemble(family, {"size": 3}, lambda cfg: record("dataset", f"data of size {cfg.size}"))
    assert [name for name, _ in calls] == ["dataset", "sampler", "source", "steps"]  # the graph waits for a pipeline
    assert parts.config == _Config(size=3) and parts.backend == "cpu"
    assert parts.sampler == ("data of size 3", 3)
    assert parts.source == ("data of size 3", ("data of size 3", 3), "cpu")
    assert parts.steps() == "step"
    with pytest.raises(TypeError, match=r"ToyLoader got unknown options \['sizes'\]"):
        assemble(family, {"sizes": 3}, lambda cfg: pytest.fail("the dataset is read after the options"))
    with pytest.raises(ValueError, match="size must be"):
        assemble(family, {"size": 0}, lambda cfg: pytest.fail("the dataset is read after the config's checks"))


def test_every_loader_builds_exactly_one_source(coco, monkeypatch) -> None:
    """Issue 9: ``GpuMaskCopyPasteLoader`` used to build a copy-paste source, then replace it."""
    made: list[type] = []
    original = EpochBatchSource.__init__

    def counting(self, *args: Any, **kwargs: Any) -> None:
        made.append(type(self))
        original(self, *args, **kwargs)

    monkeypatch.setattr(EpochBatchSource, "__init__", counting)
    for loader_type, source_type in [
        (CopyPasteLoader, CopyPasteSource),
        (GpuMaskCopyPasteLoader, GpuMaskCopyPasteSource),
        (BalancedCopyPasteLoader, CopyPasteSource),
    ]:
        made.clear()
        loader = loader_type(*coco, **KW)
        assert made == [source_type] and type(loader.source) is source_type
        assert loader.source is loader.parts.source and loader.config is loader.parts.config


def test_the_source_follows_the_family(coco) -> None:
    default, gpu_masks, balanced = (t(*coco, **KW) for t in (CopyPasteLoader, GpuMaskCopyPasteLoader, BalancedCopyPasteLoader))
    assert default.parts.family is COPY_PASTE and balanced.parts.family is BALANCED
    assert gpu_masks.parts.family.name == "GpuMaskCopyPasteLoader" and gpu_masks.parts.family.graph is COPY_PASTE.graph
    # only the default step drops the instances a window cannot show: the bank takes them whole
    assert default.source.prune_window_size == KW["output_size"] and balanced.source.prune_window_size is None
    with pytest.raises(TypeError, match=r"GpuMaskCopyPasteLoader got unknown options \['jiter'\]"):
        GpuMaskCopyPasteLoader(*coco, jiter="ssj", **KW)


def test_a_family_with_another_name_is_the_same_loader(coco) -> None:
    renamed = replace(COPY_PASTE, name="RenamedLoader")
    ours, theirs = CocoPipelineLoader(assemble(renamed, dict(KW), coco_dataset(*coco))), CopyPasteLoader(*coco, **KW)
    want, got = list(theirs), list(ours)
    assert len(want) == len(got) == 3
    for a, b in zip(want, got):
        assert a.position == b.position and torch.equal(a.images, b.images)
        for ta, tb in zip(a.targets, b.targets):
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert ours.state_dict() == theirs.state_dict() and ours.state_dict()["epoch"] == 1
    assert ours.stats == theirs.stats and ours.categories == theirs.categories
