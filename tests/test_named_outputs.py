"""Pipeline outputs and the position column addressed by name; one definition of the target
fields shared by the local loaders, the wire format and ``RemoteLoader``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decal import CopyPasteLoader
from decal.dali_pipes.core.batch import TARGET_FIELDS
from decal.dali_pipes.copy_paste.pipeline import OUTPUT_NAMES, CopyPasteOutputs, build_copy_paste_pipeline
from decal.dali_pipes.core.epoch_source import POSITION_FIELDS, LoaderPosition, PositionRow
from decal.dali_pipes.core.loader_base import position_after
from decal.server import wire

from coco_factory import write_coco_dataset


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    return write_coco_dataset(tmp_path_factory.mktemp("coco"), num_images=5, instances_per_image=(0, 4), seed=3)


def test_position_row_round_trip_and_after() -> None:
    row = PositionRow(seed=7, epoch=2, shard_id=1, batch_index=4, cursor=13)
    array = row.array()
    assert array.dtype == np.int64 and array.shape == (POSITION_FIELDS,)
    assert PositionRow.from_array(array) == row
    assert row.after() == LoaderPosition(epoch=2, cursor=13, batch_index=5)
    assert position_after([array]) == LoaderPosition(epoch=2, cursor=13, batch_index=5)


def test_position_row_of_the_wrong_length_names_the_fields() -> None:
    with pytest.raises(ValueError, match=r"5 values \('seed', 'epoch', 'shard_id', 'batch_index', 'cursor'\), got 4"):
        PositionRow.from_array(np.zeros(4, np.int64))


def test_pipeline_outputs_come_in_the_named_order(coco) -> None:
    """The graph returns its outputs by name: each output has the shape its field documents."""
    loader = CopyPasteLoader(*coco, batch_size=2, output_size=32, device="cpu", num_threads=1, seed=0)
    pipeline = build_copy_paste_pipeline(loader.source, output_size=32, copy_paste=None, device="cpu", num_threads=1)
    pipeline.build()
    outputs = CopyPasteOutputs(*pipeline.run())
    assert OUTPUT_NAMES == CopyPasteOutputs._fields
    images = np.array(outputs.images.as_tensor())
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    for i in range(2):
        n = np.array(outputs.labels[i]).shape[0]
        assert np.array(outputs.masks[i]).shape == (n, 32, 32)
        assert np.array(outputs.boxes[i]).shape == (n, 4)
        assert np.array(outputs.areas[i]).shape == (n,)
        assert np.array(outputs.iscrowd[i]).shape == (n,) and np.array(outputs.pasted[i]).shape == (n,)
    row = PositionRow.from_array(np.array(outputs.position[0]))
    assert (row.epoch, row.batch_index, row.shard_id, row.cursor) == (0, 0, 0, 2)
    assert np.array(outputs.image_id.as_tensor()).shape[0] == 2


def test_local_batch_wire_and_remote_share_the_target_fields(coco) -> None:
    loader = CopyPasteLoader(*coco, batch_size=2, output_size=32, device="cpu", num_threads=1, seed=0)
    batch = next(iter(loader))
    assert all(set(t) == set(TARGET_FIELDS) | {"image_id"} for t in batch.targets)
    targets = [{k: v.numpy() for k, v in t.items()} for t in batch.targets]
    message = wire.encode_batch(batch.images.numpy(), targets, batch.position)
    decoded = wire.decode_batch(message)
    assert all(set(t) == set(TARGET_FIELDS) | {"image_id"} for t in decoded.targets)
    assert wire.TARGET_FIELDS is TARGET_FIELDS
