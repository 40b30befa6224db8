"""The README's Mask R-CNN example is executed exactly as README.md shows it: the fenced
``python`` block that starts with ``# Mask R-CNN on decal batches`` is read from the file
and run, so the documented code cannot drift from what works."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "# Mask R-CNN on decal batches"


def readme_block(marker: str) -> str:
    """The fenced python block of README.md whose first line is ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    matching = [b for b in blocks if b.startswith(marker + "\n")]
    assert len(matching) == 1, f"README.md should hold one block starting with {marker!r}"
    return matching[0]


def test_readme_mask_rcnn_example_trains(capsys) -> None:
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_block(MARKER), str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert re.search(r"epoch 0: loss \d+\.\d{3}", printed), printed
    assert torch.isfinite(namespace["loss"])
    labels, targets = namespace["labels"], namespace["targets"]
    assert namespace["model"].roi_heads.box_predictor.cls_score.out_features == labels.num_classes
    for target in targets:
        assert target["labels"].numel() == 0 or (1 <= int(target["labels"].min()) and int(target["labels"].max()) < labels.num_classes)
    assert all(image.dtype == torch.float32 and float(image.max()) <= 1.0 for image in namespace["images"])
    # min_size = max_size = S: the model kept the S×S batch as it was
    assert namespace["model"].transform.min_size == (namespace["S"],)
