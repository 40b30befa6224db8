"""What a source worker imports: a spawned worker of DALI's parallel external source unpickles
the loader's source (:class:`~decal.dali_pipes.core.parallel_source.BatchInfoSource` over
``loader.source``), which imports the modules that define it and whatever those import. torch
is not needed to make a batch's columns, and importing it costs a process ~500 MiB of RSS,
~280 MiB of it heap (measured on the 2-core CPU machine, torch 2.15), once per worker. So unpickling the
source of every loader that takes ``source_workers`` must not import torch (nor torchvision).

Each check runs in a fresh interpreter (``python -c``, which a spawned worker also is: there is
no ``__main__`` file to re-import) and reads its ``sys.modules``.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from decal.dali_pipes.balanced.loader import BalancedCopyPasteLoader
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader, GpuMaskCopyPasteLoader
from decal.dali_pipes.core.epoch_source import LoaderPosition
from decal.dali_pipes.core.parallel_source import BatchInfoSource
from decal.dali_pipes.mosaic.loader import MosaicLoader
from decal.dali_pipes.self_training.loader import SelfTrainingLoader

from coco_factory import write_coco_dataset

#: Modules a source worker does not need; their import is what the test catches.
NOT_IN_A_WORKER = ("torch", "torchvision", "grpc", "fastapi")

KW = dict(batch_size=2, output_size=32, device="cpu", num_threads=1, seed=0)

#: Loader name → a loader on ``(json, images)`` whose source a worker would unpickle.
LOADERS = {
    "copy-paste host masks": lambda coco: CopyPasteLoader(*coco, **KW),
    "copy-paste descriptors": lambda coco: GpuMaskCopyPasteLoader(*coco, **KW),
    "balanced host masks": lambda coco: BalancedCopyPasteLoader(*coco, **KW),
    "balanced descriptors": lambda coco: BalancedCopyPasteLoader(*coco, mask_source="descriptors", **KW),
    "self-training host masks": lambda coco: SelfTrainingLoader(*coco, second_images=coco[1], **KW),
    "self-training descriptors": lambda coco: SelfTrainingLoader(*coco, second_images=coco[1], mask_source="descriptors", **KW),
    "mosaic host masks": lambda coco: MosaicLoader(*coco, **KW),
    "mosaic descriptors": lambda coco: MosaicLoader(*coco, mask_source="descriptors", **KW),
}

_UNPICKLE = (
    "import json, pickle, sys\n"
    "pickle.loads(sys.stdin.buffer.read())\n"
    f"print(json.dumps(sorted(m for m in {NOT_IN_A_WORKER!r} if m in sys.modules)))\n"
)


def modules_after_unpickling(payload: bytes) -> list[str]:
    """Which of :data:`NOT_IN_A_WORKER` a fresh interpreter holds after unpickling ``payload``."""
    # cwd "/": a worker's imports come from the installed package, not a checkout's folders
    done = subprocess.run([sys.executable, "-c", _UNPICKLE], input=payload, capture_output=True, check=False,
                          cwd="/", timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("worker-imports"), num_images=4, seed=1)


@pytest.mark.parametrize("name", list(LOADERS))
def test_unpickling_a_loader_source_imports_no_torch(coco, name) -> None:
    loader = LOADERS[name](coco)
    payload = pickle.dumps(BatchInfoSource(loader.source, LoaderPosition()))
    assert modules_after_unpickling(payload) == []


def test_the_check_sees_torch() -> None:
    """The subprocess check itself: a pickle that needs torch is reported."""
    import torch

    assert modules_after_unpickling(pickle.dumps(torch.zeros(1))) == ["torch"]
