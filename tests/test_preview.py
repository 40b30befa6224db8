"""The copy-paste preview: captions with each sample's real geometry, a light tint, and
labels that never cover each other."""

from __future__ import annotations

import numpy as np
import torch

from decal.dali_pipes.core.epoch_source import LoaderPosition
from decal.dali_pipes.preview.instances import PASTED_COLOUR, TINT, _place_label, copy_paste_captions, render_sample, sample_caption
from decal.dali_pipes.coco.sample_data import ensure_sample_dataset
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader


def test_captions_carry_the_geometry_the_source_drew() -> None:
    annotations, images = ensure_sample_dataset()
    loader = CopyPasteLoader(annotations, images, batch_size=2, output_size=64, seed=5, device="cpu")
    batches = [batch for _ in range(2) for batch in loader]  # two epochs, one batch each
    for batch in batches:
        captions = copy_paste_captions(batch, seed=5, shard_id=0, jitter="lsj", flip_prob=0.5)
        # the source's own columns for the same batch: scale (5) and flip (8)
        start = LoaderPosition(batch.position.epoch, 0, batch.position.batch_index - 1)
        loader.source.restart(start)
        columns = loader.source()
        for caption, scale, flip, target in zip(captions, columns[5], columns[8], batch.targets):
            assert caption.startswith(f"r={float(scale):.2f}  {'flipped' if flip else 'not flipped'}  ")
            assert caption.endswith(f"pasted {int(target['pasted'].sum())} of {len(target['labels'])}")


def _target(boxes: list[list[float]], size: int) -> dict[str, torch.Tensor]:
    masks = torch.zeros((len(boxes), size, size), dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[int(y0):int(y1), int(x0):int(x1)] = 1
    n = len(boxes)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.arange(1, n + 1),
        "masks": masks,
        "pasted": torch.tensor([i % 2 for i in range(n)], dtype=torch.uint8),
    }


def test_labels_do_not_pile_up() -> None:
    taken: list[tuple[float, float, float, float]] = []
    for _ in range(12):  # twelve instances with the same box
        place = _place_label(60, 200, (20.0, 40.0, 120.0, 110.0), taken)
        if place is not None:
            taken.append((place[0], place[1], place[0] + 60, place[1] + 12))
    assert 3 <= len(taken) < 12
    for i, a in enumerate(taken):
        for b in taken[i + 1:]:
            assert a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3], (a, b)


def test_tint_is_light_and_applied_once() -> None:
    size = 64
    image = torch.full((3, size, size), 100, dtype=torch.uint8)
    target = _target([[10, 10, 60, 60]] * 8, size)  # eight instances on the same pixels
    picture = np.asarray(render_sample(image, target, {i: "x" * 6 for i in range(1, 9)}, size=size))
    # a pixel inside every mask, away from the outlines and labels: tinted once, by the last
    # instance (pasted, magenta), with weight TINT
    expected = (1 - TINT) * 100 + TINT * np.array(PASTED_COLOUR)
    assert np.all(np.abs(picture[40, 55].astype(float) - expected) <= 1), picture[40, 55]
    assert TINT <= 0.25
    assert sample_caption(target) == "pasted 4 of 8"
