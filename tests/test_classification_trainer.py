"""The classification trainer (ResNet + CutMix) end to end on the CPU, in its tiny configuration.

* the soft-target cross-entropy equals CutMix's ``lam · CE(a) + (1 - lam) · CE(b)``
  (hand-written float64 reference), and top-k counts are right;
* the tiny config overfits a handful of images under CutMix (the loss really decreases) and
  the non-mixed centre-crop evaluation reports top-1/top-5;
* checkpoint/resume restores the step, the loader position and the EMA and continues exactly;
* the CLI (``--print-config``, ``--eval-only``), local weights; ``--remote`` trains on the
  server's CutMix stream like the local loader, and refuses an option the server cannot take.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from decal.trainers.classification import PRESETS, ClassificationConfig, EvalFolder, evaluate_classifier, soft_target_cross_entropy, topk_correct, train
from decal.trainers.classification.config import ModelConfig
from decal.trainers.classification.model import build_classifier
from decal.trainers.cli import main as cli_main
from decal.trainers.common.checkpoint import Checkpointer, load_checkpoint
from decal.trainers.common.config import load_config
from decal.trainers.common.metrics import read_jsonl

from folder_factory import write_image_folder
from trainer_helpers import assert_remote_trains_like_local, assert_same_weights, run_and_resume, tiny_config, torchrun



def tiny(out_dir: Path, **sections: Any) -> ClassificationConfig:
    return tiny_config(ClassificationConfig, PRESETS, out_dir, **sections)




# --------------------------------------------------------------------------- loss and accuracy


def test_soft_target_cross_entropy_is_cutmixs_loss() -> None:
    rng = np.random.default_rng(0)
    b, c = 5, 4
    logits = rng.normal(size=(b, c)) * 3
    y_a, y_b = rng.integers(0, c, b), rng.integers(0, c, b)
    lam = rng.random(b)
    targets = np.zeros((b, c))
    targets[np.arange(b), y_a] += lam
    targets[np.arange(b), y_b] += 1 - lam
    expected = 0.0
    for i in range(b):  # [CUTMIX]: lam · CE(logits, y_a) + (1 - lam) · CE(logits, y_b), averaged
        log_z = math.log(sum(math.exp(v) for v in logits[i]))
        expected += lam[i] * (log_z - logits[i, y_a[i]]) + (1 - lam[i]) * (log_z - logits[i, y_b[i]])
    expected /= b
    got = soft_target_cross_entropy(torch.tensor(logits), torch.tensor(targets))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    got32 = soft_target_cross_entropy(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32))
    assert float(got32) == pytest.approx(expected, rel=1e-5)


def test_topk_correct() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.2, 0.3, 0.4, 0.5], [0.9, 0.1, 0.0, 0.2, 0.3, 0.4, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    labels = torch.tensor([1, 6, 0])
    assert topk_correct(logits, labels, (1, 5)) == [1, 2]  # the label 0 of row 2 has the lowest logit
    assert topk_correct(logits[:, :2], torch.tensor([1, 1, 0]), (1, 5)) == [1, 3]  # k capped at C


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three classes of four synthetic photos (distinct hues)."""
    return write_image_folder(tmp_path_factory.mktemp("cls-images"), classes=3, per_class=4, size_range=(48, 96), seed=0)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, folder: Path) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cls-overfit")
    cfg = tiny(out, data={"train_images": str(folder), "val_images": str(folder)}, run={"max_iters": 40})
    return {"result": train(cfg), "out": out, "cfg": cfg}


def test_tiny_config_overfits_under_cutmix(overfit: dict[str, Any]) -> None:
    records = read_jsonl(overfit["out"] / "metrics.jsonl", split="train")
    losses = np.array([r["loss"] for r in records])
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    first, last = float(losses[:10].mean()), float(losses[-10:].mean())
    assert last < 0.8 * first, f"loss did not decrease enough: {first:.3f} -> {last:.3f}"
    # the part of the loss above its floor (the soft targets' entropy, CutMix's noise) shrinks more
    excess = losses - np.array([r["target_entropy"] for r in records])
    assert np.all(excess > -1e-4)
    assert excess[-10:].mean() < 0.6 * excess[:10].mean(), (excess[:10].mean(), excess[-10:].mean())
    assert any(r["lam"] < 1.0 for r in records)  # CutMix really mixed
    assert all(r["images_per_s"] > 0 for r in records)


def test_evaluation_reports_top1_and_top5(overfit: dict[str, Any]) -> None:
    metrics = overfit["result"]["eval"]
    assert metrics["num_images"] == 12
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["top5"] == 1.0  # 3 classes: top-5 is top-3
    assert metrics["top1"] >= 0.5, metrics  # the training images themselves, after overfitting
    assert read_jsonl(overfit["out"] / "metrics.jsonl", split="eval")[-1]["step"] == 40
    assert (overfit["out"] / "eval" / "step_00000040.json").is_file()
    state = load_checkpoint(Checkpointer(overfit["out"] / "checkpoints").latest())
    assert state["trainer"] == "classification" and state["classes"] == ["class_0", "class_1", "class_2"]
    assert state["model"]["fc.weight"].shape == (3, 512)


def test_eval_reader_is_a_centre_crop_and_maps_classes(folder: Path) -> None:
    data = EvalFolder(folder, ["class_2", "class_0", "class_1", "extra"], image_size=32, crop_pct=0.5)
    pixels, label = data[0]
    assert pixels.shape == (3, 32, 32) and label == 1  # class_0 is index 1 of the training classes
    with pytest.raises(ValueError, match="not among the training classes"):
        EvalFolder(folder, ["class_0"], image_size=32)


def test_evaluate_classifier_counts_the_first_max_images_of_the_folder(folder: Path) -> None:
    classes = ["class_0", "class_1", "class_2", "x", "y", "z"]
    data = EvalFolder(folder, classes, image_size=32)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, len(classes)))
    assert evaluate_classifier(model, data, batch_size=4)["num_images"] == len(data) == 12
    metrics = evaluate_classifier(model, data, batch_size=4, max_images=5)
    assert metrics["num_images"] == 5 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0


def test_resume_restores_step_loader_position_and_ema(tmp_path: Path, folder: Path) -> None:
    common = {
        "data": {"train_images": str(folder)},
        "loader": {"batch_size": 4},
        "run": {"max_iters": 5, "checkpoint_every": 2, "keep_checkpoints": 0},
        "ema": {"enabled": True, "decay": 0.9},
        "eval": {"enabled": False},
    }
    full, resumed, state = run_and_resume(train, tiny, tmp_path, common)
    assert int(state["ema"]["num_updates"]) == 2
    assert_same_weights(full["loop"], resumed["loop"])


def test_local_weights_skip_the_classifier_of_another_size(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = build_classifier(ModelConfig(depth=18, weights=str(tmp_path / "r18.pth")), num_classes=3)
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 3
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError):
        build_classifier(ModelConfig(depth=50, weights=str(tmp_path / "r34.pth")), num_classes=3)


def test_remote_trains_like_the_local_loader(tmp_path: Path, folder: Path) -> None:
    """``--remote``: the server's "cutmix" stream gives the same first batch, positions and
    losses as the local CutMixLoader (the class names come in the stream's header)."""
    pytest.importorskip("grpc")
    common = {"loader": {"batch_size": 4}, "run": {"max_iters": 3}, "eval": {"enabled": False}}
    result = assert_remote_trains_like_local(
        train, tiny, tmp_path, {"folder": (None, folder)}, {"train_images": str(folder)}, common
    )
    assert result["loop"].extra_state["classes"] == sorted(p.name for p in folder.iterdir() if p.is_dir())


def test_remote_refuses_an_option_the_server_does_not_take(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"loader.mean = .*does not take this option"):
        train(tiny(tmp_path, data={"remote": "127.0.0.1:1", "remote_dataset": "x"}, loader={"mean": [0.5, 0.5, 0.5]}))


def test_cli_print_config_and_eval_only(overfit: dict[str, Any], folder: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["train", "classify", "--print-config"]) == 0
    paper = json.loads(capsys.readouterr().out)
    assert paper["model"]["depth"] == 50 and paper["optim"]["lr"] == 0.1 and paper["optim"]["nesterov"] is True
    assert paper["loader"]["cutmix_alpha"] == 1.0 and paper["loader"]["prob"] == 1.0 and paper["run"]["epochs"] == 300
    assert paper["schedule"]["milestones"] == [0.25, 0.5, 0.75] and paper["eval"]["crop_pct"] == 0.875
    assert cli_main(["train", "classify", "--preset", "tiny", "--depth", "34", "--set", "optim.lr=0.01", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["depth"] == 34 and printed["optim"]["lr"] == 0.01
    checkpoint = Checkpointer(overfit["out"] / "checkpoints").latest()
    assert cli_main(["train", "classify", "--preset", "tiny", "--eval-only", "--checkpoint", str(checkpoint),
                     "--val-images", str(folder), "--set", "eval.max_images=5"]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 5 and 0.0 <= metrics["top1"] <= 1.0


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "trainers" / "classification" / "configs"
    files = sorted(root.glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        load_config(ClassificationConfig, path, presets=PRESETS)
    paper = load_config(ClassificationConfig, root / "imagenet_r50_cutmix.toml", presets=PRESETS)
    assert paper.optim.lr == 0.1 and paper.optim.nesterov and paper.loader.cutmix_alpha == 1.0 and paper.loader.output_size == 224


def test_ddp_two_ranks_under_torchrun(tmp_path: Path, folder: Path) -> None:
    """torchrun with two gloo ranks: one DALI shard per rank; the evaluation counts each of
    the 12 images once (rank r reads images r, r + 2, ...; counts summed over ranks)."""
    out = tmp_path / "ddp"
    torchrun("classify", "--preset", "tiny", "--images", str(folder), "--val-images", str(folder), "--out-dir", str(out),
             "--max-iters", "2", "--batch-size", "3")  # fmt: skip
    state = load_checkpoint(Checkpointer(out / "checkpoints").latest())
    assert state["world_size"] == 2 and [s["shard_id"] for s in state["loader"]] == [0, 1]
    evaluation = read_jsonl(out / "metrics.jsonl", split="eval")[-1]
    assert evaluation["num_images"] == 12 and 0.0 <= evaluation["top1"] <= 1.0
