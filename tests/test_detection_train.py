"""The detection trainer end to end on the CPU, in its tiny configuration.

* the tiny config overfits the embedded two-photo sample (the loss really decreases) and
  COCO evaluation returns AP numbers;
* checkpoint/resume restores the step, the loader position, the EMA and continues exactly;
* FASA, EMA, Seesaw and self-training each run inside a real training job;
* the remote loader (a real gRPC server on loopback) gives the same training as the local one;
* the CLI, and DDP with two gloo ranks under torchrun (one DALI shard per rank).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decal.dali_pipes.coco.sample_data import ensure_sample_dataset
from decal.trainers.cli import main as cli_main
from decal.trainers.common.checkpoint import Checkpointer, load_checkpoint
from decal.trainers.common.config import deep_merge
from decal.trainers.common.metrics import read_jsonl
from decal.trainers.detection import PRESETS, DetectionConfig, train
from decal.trainers.detection.pseudo_label import merge_coco

from coco_factory import write_coco_dataset
from progress_capture import CountingTqdm, count_bars, progress_lines
from trainer_helpers import PositionRecorder, assert_same_weights, run_and_resume, tiny_config, torchrun

REPO = Path(__file__).resolve().parents[1]

#: No augmentation at all: the same two photos every step (for the overfitting test).
STILL = {"copy_paste": False, "jitter": "none", "flip_prob": 0.0, "shuffle": False}


def tiny(out_dir: Path, **sections: Any) -> DetectionConfig:
    """The ``tiny`` preset, quiet, logging every step, into ``out_dir``, plus ``sections``."""
    return tiny_config(DetectionConfig, PRESETS, out_dir, **sections)


def losses(out_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(Path(out_dir) / "metrics.jsonl", split="train")]




@pytest.fixture(scope="module")
def overfit(tmp_path_factory) -> dict[str, Any]:
    """40 iterations of the tiny config on the two sample photos without augmentation."""
    out = tmp_path_factory.mktemp("overfit")
    cfg = tiny(out, loader=STILL, run={"max_iters": 40}, optim={"lr": 2e-3}, eval={"max_images": 2})
    result = train(cfg)
    return {"result": result, "out": out, "cfg": cfg}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=6, size=(96, 128), instances_per_image=(1, 4), seed=3)


def test_tiny_config_overfits_the_sample(overfit: dict[str, Any]) -> None:
    values = losses(overfit["out"])
    assert len(values) == 40 and all(np.isfinite(values))
    first, last = float(np.mean(values[:5])), float(np.mean(values[-5:]))
    assert last < 0.7 * first, f"loss did not decrease enough: first five {first:.3f}, last five {last:.3f}"
    assert overfit["result"]["step"] == 40


def test_evaluation_returns_ap_numbers(overfit: dict[str, Any]) -> None:
    metrics = overfit["result"]["eval"]
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "AR100"):
            value = metrics[f"{iou_type}/{name}"]
            assert -1.0 <= value <= 1.0
        assert metrics[f"{iou_type}/AP"] >= 0.0
    assert metrics["num_images"] == 2
    records = read_jsonl(overfit["out"] / "metrics.jsonl", split="eval")
    assert records and records[-1]["step"] == 40
    assert (overfit["out"] / "eval" / "step_00000040.json").is_file()
    state = load_checkpoint(Checkpointer(overfit["out"] / "checkpoints").latest())
    assert state["step"] == 40 and state["trainer"] == "detection" and state["config"]["model"]["backbone"] == "resnet18"


def test_one_progress_bar_and_loss_lines_at_log_every(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """The tiny preset's epochs are one batch each: one bar for the run, not one per epoch, and
    a loss line every ``log_every`` iterations (issue 12)."""
    count_bars(monkeypatch)
    cfg = tiny(tmp_path, loader=STILL, run={"max_iters": 6, "log_every": 2, "progress": True}, eval={"enabled": False})
    result = train(cfg)
    assert result["step"] == 6 and result["epoch"] == 6
    assert len(CountingTqdm.made) == 1
    assert CountingTqdm.made[0].total == 6 and CountingTqdm.made[0].n == 6
    lines = progress_lines(capfd.readouterr().err)
    assert [(step, total, epoch) for step, total, epoch, _ in lines] == [(2, 6, 1), (4, 6, 3), (6, 6, 5)]
    assert [round(r["loss"], 4) for r in read_jsonl(tmp_path / "metrics.jsonl", split="train")] == [
        loss for *_, loss in lines
    ]


def test_checkpoint_resume_restores_step_loader_position_and_ema(tmp_path: Path, synth: tuple[Path, Path]) -> None:
    data = {"train_annotations": str(synth[0]), "train_images": str(synth[1])}
    common = {
        "data": data,
        "run": {"max_iters": 5, "checkpoint_every": 2, "keep_checkpoints": 0},
        "ema": {"enabled": True, "decay": 0.9},
        "eval": {"enabled": False},
    }
    full, resumed, state = run_and_resume(train, tiny, tmp_path, common)
    assert full["step"] == 5
    assert state["ema"] is not None and int(state["ema"]["num_updates"]) == 2
    a = full["loop"]
    assert_same_weights(a, resumed["loop"])
    # the EMA really lags behind the weights
    diff = [(p - q).abs().max().item() for p, q in zip(a.model_without_ddp.parameters(), a.ema.module.parameters())]
    assert max(diff) > 0

    # resume="auto" picks the newest checkpoint of the run directory
    again = train(tiny(tmp_path / "full", **deep_merge(common, {"run": {"resume": "auto", "max_iters": 6}})))
    assert again["resumed_from"].endswith("checkpoint_00000005.pt") and again["step"] == 6


def test_fasa_in_training(tmp_path: Path) -> None:
    """Three epochs (one batch each) on the sample: statistics in epoch 0, virtual features
    from epoch 1, p_c adapted ×1.1/×0.9 after the second validation pass."""
    cfg = tiny(
        tmp_path,
        loader={"copy_paste": False},
        run={"max_iters": 0, "epochs": 3},
        fasa={"enabled": True, "prob_scale": 5.0},
        eval={"enabled": False},
    )
    result = train(cfg)
    records = read_jsonl(tmp_path / "metrics.jsonl", split="train")
    assert records[0]["loss_fasa"] == 0.0 and records[1]["loss_fasa"] > 0 and records[2]["loss_fasa"] > 0
    fasa_hook = next(h for h in result["loop"].hooks if h.key == "fasa")
    assert [h["epoch"] for h in fasa_hook.history] == [0, 1, 2]
    before, after = np.array(fasa_hook.history[0]["prob"]), np.array(fasa_hook.history[1]["prob"])
    ratio = after[before > 0] / before[before > 0]
    clipped = np.isclose(after[before > 0], 1.0)
    assert np.all(np.isclose(ratio, 0.9) | np.isclose(ratio, 1.1) | np.isclose(ratio, 1.0) | clipped)
    assert not np.allclose(after, before)
    assert read_jsonl(tmp_path / "metrics.jsonl", split="fasa")[-1]["fasa/val_rois"] > 0
    state = load_checkpoint(Checkpointer(tmp_path / "checkpoints").latest())
    assert bool(state["model"]["roi_heads.fasa.feature_used"].any())


def test_seesaw_in_training_and_evaluation(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, run={"max_iters": 3}, seesaw={"enabled": True}, eval={"max_images": 1})
    result = train(cfg)
    record = read_jsonl(tmp_path / "metrics.jsonl", split="train")[-1]
    assert "loss_cls_classes" in record and "loss_cls_objectness" in record and "loss_classifier" not in record
    assert "bbox/AP" in result["eval"]
    model = result["loop"].model_without_ddp
    assert model.roi_heads.classification_loss.cum_samples.sum() > 0
    assert model.roi_heads.box_predictor.cls_score.out_features == len(result["loop"].extra_state["categories"]) + 2


def test_self_training_pseudo_labels_merge_and_train(tmp_path: Path, overfit: dict[str, Any]) -> None:
    sample_json, sample_images = ensure_sample_dataset()
    unlabeled = tmp_path / "unlabeled" / "sub"
    unlabeled.mkdir(parents=True)
    for path in sorted(Path(sample_images).glob("*.jpg")):
        shutil.copy(path, unlabeled / f"u_{path.name}")
    teacher = Checkpointer(overfit["out"] / "checkpoints").latest()
    cfg = tiny(
        tmp_path / "student",
        run={"max_iters": 2},
        eval={"enabled": False},
        self_training={"enabled": True, "teacher_checkpoint": str(teacher), "unlabeled_images": str(tmp_path / "unlabeled"),
                       "score_threshold": 0.05},
    )
    result = train(cfg)
    assert result["step"] == 2
    pseudo = json.loads((tmp_path / "student" / "self_training" / "pseudo_labels.json").read_text())
    assert [im["file_name"] for im in pseudo["images"]] == ["sub/u_arc2017.jpg", "sub/u_voc.jpg"]
    assert pseudo["annotations"], "the teacher found nothing above 0.05"
    assert all(a["score"] >= 0.05 and a["area"] > 0 and isinstance(a["segmentation"]["counts"], str) for a in pseudo["annotations"])
    mixed = json.loads((tmp_path / "student" / "self_training" / "train_mixed.json").read_text())
    labelled = json.loads(Path(sample_json).read_text())
    assert len(mixed["images"]) == len(labelled["images"]) + 2
    assert len({im["id"] for im in mixed["images"]}) == len(mixed["images"])
    assert len(mixed["annotations"]) == len(labelled["annotations"]) + len(pseudo["annotations"])
    assert mixed["categories"] == labelled["categories"]


def test_merge_coco_renumbers_and_rebases(tmp_path: Path) -> None:
    a = write_coco_dataset(tmp_path / "a", num_images=3, seed=1)
    b = write_coco_dataset(tmp_path / "b" / "deeper", num_images=2, seed=2)
    out, root = merge_coco([a, b], tmp_path / "merged.json")
    assert root == tmp_path.resolve()
    merged = json.loads(out.read_text())
    assert [im["id"] for im in merged["images"]] == [1, 2, 3, 4, 5]
    assert all((root / im["file_name"]).is_file() for im in merged["images"])
    ids = [ann["id"] for ann in merged["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    from decal.dali_pipes.coco.reader import CocoDataset

    assert len(CocoDataset(out, root)) == 5


def test_merge_coco_keeps_lvis_split_folders(tmp_path: Path) -> None:
    """LVIS images (``coco_url``, no ``file_name``) resolve to ``split/name`` as the reader does."""
    from coco_factory import build_coco_dict, write_images, write_json

    from decal.dali_pipes.coco.reader import CocoDataset

    coco = build_coco_dict(num_images=2, seed=4)
    for image in coco["images"]:
        name = image.pop("file_name")
        image["coco_url"] = f"http://images.cocodataset.org/val2017/{name}"
    write_images(coco, tmp_path / "lvis" / "images")
    lvis_json = write_json(tmp_path / "lvis" / "lvis.json", coco)
    out, root = merge_coco([(lvis_json, tmp_path / "lvis" / "images")], tmp_path / "merged.json")
    merged = json.loads(out.read_text())
    assert all(im["file_name"].startswith("val2017/") for im in merged["images"])
    assert len(CocoDataset(out, root)) == 2


def test_remote_loader_trains_like_the_local_loader(tmp_path: Path, synth: tuple[Path, Path]) -> None:
    pytest.importorskip("grpc")
    from server_helpers import make_config, running_server

    common = {"run": {"max_iters": 3}, "eval": {"enabled": False}, "loader": {"output_size": 96}}
    local_hook = PositionRecorder()
    train(tiny(tmp_path / "local", data={"train_annotations": str(synth[0]), "train_images": str(synth[1])}, **common),
          hooks=[local_hook])
    with running_server(make_config({"synth": synth})) as server:
        remote_hook = PositionRecorder()
        result = train(
            tiny(tmp_path / "remote", data={"remote": f"127.0.0.1:{server.grpc_port}", "remote_dataset": "synth"}, **common),
            hooks=[remote_hook],
        )
    assert type(result["loop"].loader).__name__ == "RemoteLoader"
    assert [p["batch_index"] for p in remote_hook.positions] == [p["batch_index"] for p in local_hook.positions]
    np.testing.assert_allclose(remote_hook.losses, local_hook.losses, rtol=1e-4, atol=1e-5)


def test_cli_print_config_and_eval_only(overfit: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["train", "detection", "--preset", "tiny", "--set", "optim.lr=0.01", "--batch-size", "4", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.01 and printed["loader"]["batch_size"] == 4 and printed["model"]["backbone"] == "resnet18"
    checkpoint = Checkpointer(overfit["out"] / "checkpoints").latest()
    assert cli_main(["train", "detection", "--preset", "tiny", "--no-progress", "--eval-only", "--checkpoint", str(checkpoint),
                     "--set", "eval.max_images=1"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "segm/AP" in metrics and metrics["num_images"] == 1


def test_ddp_two_ranks_under_torchrun(tmp_path: Path, synth: tuple[Path, Path]) -> None:
    """torchrun with two gloo ranks on the CPU: each rank reads its own DALI shard; one
    checkpoint holds both positions; the metrics are averaged over the ranks."""
    out = tmp_path / "ddp"
    torchrun("detection", "--preset", "tiny", "--annotations", str(synth[0]), "--images", str(synth[1]), "--out-dir", str(out),
             "--max-iters", "2", "--set", "eval.enabled=false")  # fmt: skip
    state = load_checkpoint(Checkpointer(out / "checkpoints").latest())
    assert state["world_size"] == 2 and state["step"] == 2
    assert [s["shard_id"] for s in state["loader"]] == [0, 1] and all(s["num_shards"] == 2 for s in state["loader"])
    records = read_jsonl(out / "metrics.jsonl", split="train")
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
