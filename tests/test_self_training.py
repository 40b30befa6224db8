"""Self-training Copy-Paste end to end on DALI's CPU backend: two sources mixed per batch at
the configured ratio, pasted instances from the labelled set only, pseudo-labelled json or
unlabelled directory, determinism, resume, preview, GPU parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from decal.dali_pipes.self_training.loader import SelfTrainingLoader
from decal.dali_pipes.self_training.second_set import ImageDirectoryDataset
from decal.dali_pipes.self_training.twin import draw_labelled_paste_plan, split_counts
from decal.dali_pipes.preview.self_training import preview_self_training

from coco_factory import CATEGORIES, write_json, write_self_training_sets
from resume_check import stop_and_resume

OUT = 64
PSEUDO = 99  # the only category of the pseudo labels; no labelled instance has it


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("selftrain")
    pseudo, paths = write_self_training_sets(
        root, dict(num_images=7, size=(64, 80), instances_per_image=(1, 4), seed=1),
        dict(num_images=5, size=(72, 72), instances_per_image=(0, 3), seed=2), pseudo_category=PSEUDO,
    )  # fmt: skip
    bad = dict(pseudo, categories=pseudo["categories"] + [{"id": 123, "name": "unknown"}])
    bad["annotations"] = [dict(a, category_id=123) for a in pseudo["annotations"]]
    return {**paths, "bad_json": write_json(root / "bad.json", bad)}


def loader_on(sets, pseudo: bool = True, **options) -> SelfTrainingLoader:
    defaults = dict(batch_size=4, output_size=OUT, device="cpu", num_threads=1, seed=0, jitter="ssj")
    return SelfTrainingLoader(
        sets["labelled_json"], sets["labelled_dir"], second_images=sets["second_dir"],
        second_annotations=sets["pseudo_json"] if pseudo else None, **{**defaults, **options},
    )  # fmt: skip


def test_split_counts() -> None:
    assert split_counts(4, 0.5) == (2, 2) and split_counts(8, 0.25) == (6, 2) and split_counts(5, 0.0) == (5, 0)
    assert all(split_counts(t, 0.99)[0] >= 1 for t in range(1, 50))  # never a batch without labelled images


def test_plan_partners_are_labelled() -> None:
    rng = np.random.default_rng(0)
    is_labelled = np.array([1, 1, 1, 0, 0, 0], bool)
    offsets = np.array([0, 2, 5, 6, 8, 8, 9])
    for _ in range(200):
        plan = draw_labelled_paste_plan(rng, offsets, np.ones(9, bool), 100, is_labelled=is_labelled)
        for b in range(6):
            pasted = plan.paste_indices[plan.paste_offsets[b] : plan.paste_offsets[b + 1]]
            if len(pasted):
                p = plan.partner[b]
                assert is_labelled[p] and p != b
                assert np.all((pasted >= offsets[p]) & (pasted < offsets[p + 1]))
    only = draw_labelled_paste_plan(rng, offsets, np.ones(9, bool), 100, is_labelled=is_labelled, paste_into_labelled=False)
    assert np.all(only.num_pasted[:3] == 0)


@pytest.mark.parametrize("batch_size,ratio", [(4, 0.5), (8, 0.25), (3, 0.34)])
def test_ratio_holds_per_batch(sets, batch_size: int, ratio: float) -> None:
    loader = loader_on(sets, batch_size=batch_size, second_ratio=ratio)
    labelled_seen = []
    for _ in range(2):
        for batch in loader:
            domains = [int(t["domain"]) for t in batch.targets]
            n_labelled, n_second = split_counts(len(batch), ratio)
            assert domains == [0] * n_labelled + [1] * n_second
            labelled_seen += [int(t["image_id"]) for t in batch.targets if int(t["domain"]) == 0]
    assert sorted(labelled_seen) == sorted(list(range(1, 8)) * 2)  # every labelled image once per epoch
    assert len(loader) == -(-7 // split_counts(batch_size, ratio)[0])


def check_targets(batch) -> None:
    for t in batch.targets:
        n = len(t["labels"])
        assert t["masks"].shape == (n, OUT, OUT)
        if n:
            masks = t["masks"].numpy()
            rle = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
            x, y, w, h = mask_utils.toBbox(rle).T
            np.testing.assert_array_equal(t["boxes"].numpy(), np.stack([x, y, x + w, y + h], 1))


def test_pasted_instances_come_from_the_labelled_set_only(sets) -> None:
    loader = loader_on(sets, max_num_pasted=3)
    pasted_into = {0: 0, 1: 0}
    pseudo_kept = 0
    for _ in range(3):
        for batch in loader:
            check_targets(batch)
            for t in batch.targets:
                labels, pasted, domain = t["labels"], t["pasted"].bool(), int(t["domain"])
                assert PSEUDO not in labels[pasted].tolist()  # pseudo labels are never pasted
                assert set(labels[pasted].tolist()) <= {c["id"] for c in CATEGORIES}
                if domain == 0:
                    assert PSEUDO not in labels.tolist()
                else:
                    assert set(labels[~pasted].tolist()) <= {PSEUDO}  # its own instances: pseudo labels
                    pseudo_kept += int((~pasted).sum())
                pasted_into[domain] += int(pasted.sum())
    assert pasted_into[0] > 0 and pasted_into[1] > 0 and pseudo_kept > 0


def test_unlabelled_directory_and_no_paste_into_labelled(sets) -> None:
    second = ImageDirectoryDataset(sets["second_dir"])
    assert len(second) == 5 and all(not r.annotations for r in second.records)
    loader = loader_on(sets, pseudo=False, paste_into_labelled=False, max_num_pasted=2)
    received = 0
    for batch in loader:
        for t in batch.targets:
            if int(t["domain"]) == 0:
                assert not t["pasted"].any()
            else:
                assert t["pasted"].all()  # an unlabelled image holds only what was pasted into it
                received += len(t["labels"])
    assert received > 0


def flatten(batch) -> list:
    rows = [batch.images.reshape(len(batch), -1).sum(dim=1).tolist()]
    for t in batch.targets:
        rows.append((int(t["image_id"]), int(t["domain"]), t["labels"].tolist(), t["pasted"].tolist()))
    return rows


def test_determinism_and_resume(sets) -> None:
    expected = [flatten(b) for b in loader_on(sets, seed=3)]
    assert expected == [flatten(b) for b in loader_on(sets, seed=3)]
    assert expected != [flatten(b) for b in loader_on(sets, seed=4)]
    assert stop_and_resume(lambda: loader_on(sets, seed=3), flatten, stop_after=2) == expected


def test_bad_inputs(sets) -> None:
    with pytest.raises(ValueError, match=r"bad\.json: .*category ids \[123\]"):
        SelfTrainingLoader(sets["labelled_json"], sets["labelled_dir"], second_images=sets["second_dir"],
                           second_annotations=sets["bad_json"], device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="ratio"):
        loader_on(sets, second_ratio=1.0)


def test_preview(sets, tmp_path: Path) -> None:
    path = preview_self_training(
        tmp_path / "self_training.png", sets["labelled_json"], sets["labelled_dir"], second_images=sets["second_dir"],
        images=4, tile_size=96, output_size=OUT, device="cpu",
    )  # fmt: skip
    with Image.open(path) as png:
        assert png.size == (4 * 96, 22 + 96 + 16)


@pytest.mark.gpu
def test_gpu_matches_cpu(sets) -> None:
    """Same seed: the same images, domains, labels and paste flags; images equal up to the
    decoders' rounding."""
    cpu = list(loader_on(sets))
    gpu = list(loader_on(sets, device="gpu"))
    assert len(cpu) == len(gpu)
    for c, g in zip(cpu, gpu):
        assert g.images.is_cuda
        assert (g.images.cpu().float() - c.images.float()).abs().mean() < 2.0
        for tc, tg in zip(c.targets, g.targets):
            assert int(tg["domain"]) == int(tc["domain"]) and int(tg["image_id"]) == int(tc["image_id"])
            assert tg["labels"].cpu().tolist() == tc["labels"].tolist()
            assert tg["pasted"].cpu().tolist() == tc["pasted"].tolist()


def test_corrupt_second_set_image_is_skipped(sets, tmp_path: Path) -> None:
    import shutil

    second = tmp_path / "second"
    shutil.copytree(sets["second_dir"], second)
    victim = sorted(second.glob("*.jpg"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] + b"\x00\xff" * 20)  # header intact, data broken
    loader = SelfTrainingLoader(sets["labelled_json"], sets["labelled_dir"], second_images=second,
                                batch_size=4, output_size=OUT, device="cpu", num_threads=1, on_error="skip")  # fmt: skip
    for _ in range(2):
        for batch in loader:
            assert [int(t["domain"]) for t in batch.targets].count(1) == split_counts(len(batch), 0.5)[1]
    assert sum(loader.stats["skipped_images"].values()) == 1
