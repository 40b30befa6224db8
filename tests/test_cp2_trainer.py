"""The CP² trainers end to end on the CPU, in their tiny configurations.

* pretraining overfits a handful of synthetic images (the loss really decreases once the
  queue holds real keys), and writes metrics and checkpoints;
* checkpoint/resume restores the step, the loader position, the queue and the key encoder,
  and continues exactly;
* fine-tuning from the pretraining checkpoint trains a segmenter on the two-photo sample and
  reports mIoU; ``--eval-only`` re-evaluates the checkpoint;
* ``--remote`` pretraining on the server's CP² stream trains like the local loader;
  fine-tuning's ``--remote`` is refused with a clear error;
* the CLI, and DDP with two gloo ranks under
  torchrun (one DALI shard per rank, keys gathered into one queue, shuffled BN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decal.dali_pipes.coco.sample_data import ensure_sample_dataset
from decal.trainers.cli import main as cli_main
from decal.trainers.common.checkpoint import Checkpointer, load_checkpoint
from decal.trainers.common.config import ConfigError, load_config
from decal.trainers.common.metrics import read_jsonl
from decal.trainers.cp2 import FINETUNE_PRESETS, PRESETS, CP2Config, CP2FinetuneConfig, SemanticCoco, finetune, train

from coco_factory import write_coco_dataset
from folder_factory import write_image_folder
from trainer_helpers import assert_remote_trains_like_local, run_and_resume, tiny_config, torchrun

REPO = Path(__file__).resolve().parents[1]

#: Light augmentation (no colour, blur, grey or flip; crops of 90–100 %): what lets the tiny
#: model memorise the images in a few dozen iterations.
STILL = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "flip_prob": 0.0, "scale": [0.9, 1.0]}


def tiny(out_dir: Path, **sections: Any) -> CP2Config:
    return tiny_config(CP2Config, PRESETS, out_dir, **sections)


def tiny_finetune(out_dir: Path, **sections: Any) -> CP2FinetuneConfig:
    return tiny_config(CP2FinetuneConfig, FINETUNE_PRESETS, out_dir, **sections)




@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """32 synthetic photos (8 hues × 4), unlabelled."""
    return write_image_folder(tmp_path_factory.mktemp("cp2-images"), classes=8, per_class=4, size_range=(64, 128), seed=0, labelled=False)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, folder: Path) -> dict[str, Any]:
    """60 iterations of the tiny config on the 32 images, batch 8, queue 16, light augmentation."""
    out = tmp_path_factory.mktemp("cp2-overfit")
    cfg = tiny(out, data={"train_images": str(folder)}, loader={**STILL, "batch_size": 8}, run={"max_iters": 60},
               optim={"base_batch_size": 8})  # fmt: skip
    return {"result": train(cfg), "out": out, "cfg": cfg}


def test_tiny_pretraining_overfits(pretrained: dict[str, Any]) -> None:
    records = read_jsonl(pretrained["out"] / "metrics.jsonl", split="train")
    losses = np.array([r["loss"] for r in records])
    assert len(losses) == 60 and np.all(np.isfinite(losses))
    cfg = pretrained["cfg"]
    filled = cfg.contrast.queue_size // cfg.loader.batch_size  # steps until the queue holds real keys only
    early, late = float(losses[filled : filled + 10].mean()), float(losses[-10:].mean())
    assert late < 0.85 * early, f"loss did not decrease enough: {early:.3f} -> {late:.3f}"
    instance = np.array([r["loss_instance"] for r in records])
    assert instance[-10:].mean() < instance[filled : filled + 10].mean()
    for key in ("loss_dense", "acc_instance", "acc_dense", "images_per_s", "lr"):
        assert all(np.isfinite(r[key]) for r in records), key
    accuracy = np.array([r["acc_instance"] for r in records])
    assert accuracy[-10:].mean() > accuracy[filled : filled + 10].mean() + 0.1
    state = load_checkpoint(Checkpointer(pretrained["out"] / "checkpoints").latest())
    assert state["trainer"] == "cp2" and state["step"] == 60
    assert state["model"]["queue"].shape == (128, 16) and int(state["model"]["queue_ptr"]) == (60 * 8) % 16
    assert "encoder_k.encoder.backbone.conv1.weight" in state["model"]


def test_resume_restores_step_loader_position_queue_and_key_encoder(tmp_path: Path, folder: Path) -> None:
    common = {"data": {"train_images": str(folder)}, "run": {"max_iters": 5, "checkpoint_every": 2, "keep_checkpoints": 0}}
    full, resumed, _ = run_and_resume(train, tiny, tmp_path, common)
    a, b = full["loop"].model_without_ddp.state_dict(), resumed["loop"].model_without_ddp.state_dict()
    assert int(a["queue_ptr"]) == int(b["queue_ptr"]) == (5 * 4) % 16
    for name in ("queue", "encoder_k.encoder.backbone.conv1.weight", "encoder_q.projection.layers.2.weight"):
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=name)


def test_config_checks_and_remote_finetuning_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="output_stride"):
        train(tiny(tmp_path, loader={"stride": 8}))
    with pytest.raises(NotImplementedError, match="segmentation"):
        finetune(tiny_finetune(tmp_path, data={"remote": "127.0.0.1:1", "remote_dataset": "x"}))


def test_remote_pretraining_trains_like_the_local_loader(tmp_path: Path, folder: Path) -> None:
    """``--remote``: the server's "cp2" stream gives the same first batch, positions and
    losses as the local CP2Loader."""
    pytest.importorskip("grpc")
    common = {"run": {"max_iters": 3}}
    assert_remote_trains_like_local(train, tiny, tmp_path, {"images": (None, folder)}, {"train_images": str(folder)}, common)


def test_semantic_labels_of_the_sample() -> None:
    json_path, images = ensure_sample_dataset()
    data = SemanticCoco(json_path, images)
    assert data.num_classes == 1 + len(data.coco.categories)
    label = data.label(0)
    record = data.coco[0]
    assert label.shape == (record.height, record.width)
    present = set(np.unique(label).tolist()) - {0, 255}
    assert present <= {data.label_of[a.category_id] for a in record.annotations}
    assert len(present) >= 2 and (label == 0).any()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained: dict[str, Any]) -> dict[str, Any]:
    """The tiny fine-tuning from the pretraining checkpoint, on the two sample photos."""
    out = tmp_path_factory.mktemp("cp2-finetune")
    checkpoint = Checkpointer(pretrained["out"] / "checkpoints").latest()
    cfg = tiny_finetune(out, model={"pretrained": str(checkpoint)}, run={"max_iters": 30})
    return {"result": finetune(cfg), "out": out, "cfg": cfg, "pretrained": checkpoint}


def test_finetuning_from_cp2_reports_miou(finetuned: dict[str, Any]) -> None:
    result = finetuned["result"]
    losses = [r["loss"] for r in read_jsonl(finetuned["out"] / "metrics.jsonl", split="train")]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    metrics = result["eval"]
    assert 0.0 <= metrics["mIoU"] <= 1.0 and 0.0 <= metrics["aAcc"] <= 1.0 and metrics["num_images"] == 2
    assert metrics["num_classes_present"] >= 2 and "IoU/background" in metrics
    assert metrics["aAcc"] > 0.3  # the background alone covers about half of the pixels
    assert read_jsonl(finetuned["out"] / "metrics.jsonl", split="eval")[-1]["step"] == 30
    # the encoder started from the pretraining checkpoint's query encoder, the classifier is new
    state = load_checkpoint(finetuned["result"]["checkpoint"])
    assert state["trainer"] == "cp2-finetune" and state["num_classes"] == 61
    assert state["model"]["classifier.weight"].shape[:2] == (61, 64)


def test_finetuning_starts_from_the_pretrained_encoder(finetuned: dict[str, Any]) -> None:
    from decal.trainers.common.config import from_dict
    from decal.trainers.cp2.config import SegModelConfig
    from decal.trainers.cp2.model import build_segmenter

    cfg = from_dict(SegModelConfig, {**finetuned["cfg"].model.__dict__, "pretrained": str(finetuned["pretrained"])})
    model = build_segmenter(cfg, 61)
    pretrained = load_checkpoint(finetuned["pretrained"])["model"]
    for name, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, pretrained[f"encoder_q.encoder.{name}"], msg=name)


def test_cli_print_config_and_eval_only(finetuned: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["train", "cp2", "--preset", "tiny", "--set", "contrast.queue_size=64", "--batch-size", "2", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["contrast"]["queue_size"] == 64 and printed["loader"]["batch_size"] == 2
    assert printed["contrast"]["temperature"] == 0.2 and printed["contrast"]["dense_weight"] == 0.2
    assert cli_main(["train", "cp2", "--finetune", "--preset", "tiny", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["schedule"]["name"] == "poly" and printed["loader"]["output_size"] == 64
    checkpoint = finetuned["result"]["checkpoint"]
    assert cli_main(["train", "cp2", "--finetune", "--preset", "tiny", "--eval-only", "--checkpoint", checkpoint,
                     "--set", "eval.max_images=1"]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 1 and 0.0 <= metrics["mIoU"] <= 1.0


def test_ddp_two_ranks_under_torchrun(tmp_path: Path, folder: Path) -> None:
    """torchrun with two gloo ranks on the CPU: each rank reads its own DALI shard, the keys of
    both ranks enter the queue (the pointer moves by the global batch), BN is shuffled."""
    out = tmp_path / "ddp"
    torchrun("cp2", "--preset", "tiny", "--images", str(folder), "--out-dir", str(out), "--max-iters", "2", "--batch-size", "2")
    state = load_checkpoint(Checkpointer(out / "checkpoints").latest())
    assert state["world_size"] == 2 and state["step"] == 2
    assert [s["shard_id"] for s in state["loader"]] == [0, 1] and all(s["num_shards"] == 2 for s in state["loader"])
    assert int(state["model"]["queue_ptr"]) == 2 * 2 * 2  # 2 steps × 2 ranks × 2 keys
    records = read_jsonl(out / "metrics.jsonl", split="train")
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)


def test_example_configs_load_and_keep_the_papers_defaults() -> None:
    """Every TOML in trainers/cp2/configs loads; a partial table keeps the paper's other values."""
    from decal.trainers.common.optim import lr_factor

    files = sorted((REPO / "trainers" / "cp2" / "configs").glob("*.toml"))
    assert len(files) >= 4
    for path in files:
        if "finetune" in path.name:
            cfg = load_config(CP2FinetuneConfig, path, presets=FINETUNE_PRESETS)
            assert cfg.schedule.name == "poly"
        else:
            cfg = load_config(CP2Config, path, presets=PRESETS)
            assert cfg.loader.stride == cfg.model.output_stride == 16
    paper = load_config(CP2Config, REPO / "trainers" / "cp2" / "configs" / "imagenet_r50_200ep.toml")
    assert (paper.optim.lr, paper.optim.weight_decay, paper.contrast.queue_size, paper.contrast.momentum) == (0.015, 1e-4, 65536, 0.999)
    assert paper.loader.drop_last and paper.model.aspp_channels == 512 and paper.model.backbone == "resnet50"
    quick = load_config(CP2Config, REPO / "trainers" / "cp2" / "configs" / "imagenet_r50_quick_tuning.toml")
    assert quick.model.backbone_weights and quick.run.epochs == 20
    voc = load_config(CP2FinetuneConfig, REPO / "trainers" / "cp2" / "configs" / "finetune_voc.toml")
    assert (voc.optim.lr, voc.optim.weight_decay, voc.run.max_iters, voc.loader.output_size) == (0.003, 0.0, 40000, 512)
    # poly: 1 → 1e-4 / 0.003 of the rate, (1 - t)^0.9 in between
    floor = voc.schedule.min_lr_factor
    assert lr_factor(voc.schedule, 0, 100) == pytest.approx(1.0)
    assert lr_factor(voc.schedule, 50, 100) == pytest.approx(floor + (1 - floor) * 0.5**0.9)
    assert lr_factor(voc.schedule, 100, 100) == pytest.approx(floor)


def test_ddp_finetuning_shards_training_and_evaluation(tmp_path: Path) -> None:
    """Fine-tuning under torchrun: each rank reads its half of every epoch; the mIoU counts
    every validation image once (confusion matrices summed over the ranks)."""
    json_path, images = write_coco_dataset(tmp_path / "coco", num_images=6, size=(64, 80), instances_per_image=(1, 3), seed=2)
    out = tmp_path / "ddp-finetune"
    torchrun("cp2", "--finetune", "--preset", "tiny", "--annotations", str(json_path), "--images", str(images),
             "--val-annotations", str(json_path), "--val-images", str(images), "--out-dir", str(out), "--max-iters", "2")  # fmt: skip
    state = load_checkpoint(Checkpointer(out / "checkpoints").latest())
    assert state["world_size"] == 2 and [s["shard_id"] for s in state["loader"]] == [0, 1]
    evaluation = read_jsonl(out / "metrics.jsonl", split="eval")[-1]
    assert evaluation["num_images"] == 6 and 0.0 <= evaluation["mIoU"] <= 1.0


def test_segmentation_loader_resumes_mid_epoch_and_shards(tmp_path: Path) -> None:
    from decal.trainers.cp2.config import SegLoaderConfig
    from decal.trainers.cp2.segmentation import SegmentationLoader

    json_path, images = write_coco_dataset(tmp_path, num_images=5, size=(64, 80), instances_per_image=(1, 3), seed=4)
    data = SemanticCoco(json_path, images)
    cfg = SegLoaderConfig(batch_size=2, output_size=48, base_size=48, num_workers=0, drop_last=False, seed=3)
    loader = SegmentationLoader(data, cfg)
    assert len(loader) == 3  # 5 images: 2 + 2 + 1
    first = [b for b in loader] + [b for b in loader]  # two epochs
    assert loader.epoch == 2 and [len(b) for b in first] == [2, 2, 1, 2, 2, 1]
    assert first[0].images.shape == (2, 3, 48, 48) and first[0].labels.dtype == torch.int64
    assert not torch.equal(first[0].images, first[3].images)  # another order / draw in epoch 1
    again = SegmentationLoader(data, cfg)
    iterator = iter(again)
    next(iterator)
    state = again.state_dict()
    assert state == {"epoch": 0, "batch_index": 1, "seed": 3, "shard_id": 0, "num_shards": 1}
    resumed = SegmentationLoader(data, cfg)
    resumed.load_state_dict(state)
    rest = [b for b in resumed] + [b for b in resumed]
    for a, b in zip(rest, first[1:]):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # two shards: the epoch padded to 6 by wrapping, 3 images each, disjoint but for the pad
    shards = [SegmentationLoader(data, cfg, shard_id=r, num_shards=2)._shard_indices(0) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3] and set(shards[0]) | set(shards[1]) == set(range(5))
