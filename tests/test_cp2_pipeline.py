"""The CP² loader end to end on DALI's CPU backend: real JPEGs through real DALI operators,
checked against the host draws and the NumPy twin; determinism, resume, a separate
background folder, bad files. The GPU test compares the GPU pipeline with the CPU one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from decal.dali_pipes.cp2.twin import compose_cp2, draw_view_params, random_erasing_rects
from decal.dali_pipes.cp2.loader import CP2Loader
from decal.dali_pipes.cp2.pipeline import BG_PICK_STREAM, BG_VIEW_STREAM, FG_VIEW_STREAM, MASK_STREAM
from decal.dali_pipes.core.errors import DatasetError
from decal.dali_pipes.coco.sample_data import ensure_sample_dataset

from folder_factory import corrupt_jpeg, write_image_folder
from loader_variants import batch_generator

S = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("cp2"), classes=2, per_class=3, seed=3, labelled=False)


def loader_on(root: Path, **options) -> CP2Loader:
    defaults = dict(batch_size=3, output_size=S, device="cpu", num_threads=1, seed=0)
    return CP2Loader(root, **{**defaults, **options})


def host_draws(loader: CP2Loader, batch, start_cursor: int):
    """Recompute what the source drew for ``batch``: images, view params and rectangles."""
    b = len(batch)
    fg = loader.source.epoch_order(batch.position.epoch)[start_cursor : batch.position.cursor]
    bg = batch_generator(loader, batch, BG_PICK_STREAM).integers(0, len(loader.backgrounds), size=2 * b)
    fg_size = np.array([loader.dataset.read_image(int(i))[1] for i in fg])
    bg_size = np.array([loader.backgrounds.read_image(int(i))[1] for i in bg])
    view = loader.config.view_config()
    fg_rng, bg_rng = batch_generator(loader, batch, FG_VIEW_STREAM), batch_generator(loader, batch, BG_VIEW_STREAM)
    params = {
        "fg_q": draw_view_params(fg_rng, fg_size[:, 0], fg_size[:, 1], view),
        "fg_k": draw_view_params(fg_rng, fg_size[:, 0], fg_size[:, 1], view),
        "bg_q": draw_view_params(bg_rng, bg_size[:b, 0], bg_size[:b, 1], view),
        "bg_k": draw_view_params(bg_rng, bg_size[b:, 0], bg_size[b:, 1], view),
    }
    mask_rng = batch_generator(loader, batch, MASK_STREAM)
    rect_q = random_erasing_rects(mask_rng, b, S, S)
    rect_k = random_erasing_rects(mask_rng, b, S, S)
    sources = {"fg_q": (loader.dataset, fg), "fg_k": (loader.dataset, fg), "bg_q": (loader.backgrounds, bg[:b]), "bg_k": (loader.backgrounds, bg[b:])}
    return params, sources, rect_q, rect_k


def test_end_to_end_on_the_sample_photos() -> None:
    """The two embedded JPEGs as one unlabelled folder (foregrounds and backgrounds)."""
    root = ensure_sample_dataset()[1]
    loader = loader_on(root, batch_size=2, normalize=False, return_views=True, output_size=S)
    batch = next(iter(loader))
    assert batch.image_q.shape == (2, 3, S, S) and batch.image_q.dtype == torch.uint8
    assert batch.mask_q.shape == (2, S, S) and batch.mask_q_feat.shape == (2, S // 16, S // 16)
    _, _, rect_q, rect_k = host_draws(loader, batch, 0)
    twin = compose_cp2(*(batch.views[k].numpy() for k in ("fg_q", "fg_k", "bg_q", "bg_k")), rect_q, rect_k, 16)
    np.testing.assert_array_equal(batch.image_q.permute(0, 2, 3, 1).numpy(), twin.image_q)
    np.testing.assert_array_equal(batch.image_k.permute(0, 2, 3, 1).numpy(), twin.image_k)
    np.testing.assert_array_equal(batch.mask_q.numpy(), twin.mask_q)
    np.testing.assert_array_equal(batch.mask_k_feat.numpy(), twin.mask_k_feat)


def test_views_masks_and_compositions_follow_the_host_draws(folder: Path) -> None:
    loader = loader_on(folder, normalize=False, return_views=True)
    cursor, checked_plain, checked_gray = 0, 0, 0
    for batch in loader:
        params, sources, rect_q, rect_k = host_draws(loader, batch, cursor)
        cursor = batch.position.cursor
        # masks: the drawn rectangles; 50–80 % of the area; the stride samples of CP2
        for mask, feat, rect in ((batch.mask_q, batch.mask_q_feat, rect_q), (batch.mask_k, batch.mask_k_feat, rect_k)):
            for i, (y, x, h, w) in enumerate(rect):
                expected = np.zeros((S, S), np.uint8)
                expected[y : y + h, x : x + w] = 1
                np.testing.assert_array_equal(mask[i].numpy(), expected)
            fraction = mask.float().mean((1, 2))
            assert (fraction > 0.45).all() and (fraction < 0.85).all()
            torch.testing.assert_close(feat, mask[:, 8::16, 8::16])
        # compositions: foreground view inside the rectangle, background view outside
        m = batch.mask_q.unsqueeze(1).bool()
        fg, bg = batch.views["fg_q"].permute(0, 3, 1, 2), batch.views["bg_q"].permute(0, 3, 1, 2)
        torch.testing.assert_close(batch.image_q, torch.where(m, fg, bg))
        # views: crop + flip as drawn (checked where no colour op or blur was drawn), grayscale
        for name, p in params.items():
            dataset, indices = sources[name]
            for i, index in enumerate(indices):
                view = batch.views[name][i].permute(2, 0, 1).float()
                if p.grayscale[i]:
                    assert (view.max(0).values - view.min(0).values).max() <= 2
                    checked_gray += 1
                if p.jitter[i] or p.grayscale[i] or p.blur[i]:
                    continue
                x, y, w, h = (int(v) for v in p.crop[i])
                with Image.open(dataset[int(index)].path) as image:
                    ref = TF.resized_crop(TF.pil_to_tensor(image.convert("RGB")), y, x, h, w, [S, S], antialias=True)
                if p.flip[i]:
                    ref = ref.flip(-1)
                assert (view - ref.float()).abs().mean() < 1.0, f"{name}[{i}] differs"
                checked_plain += 1
    assert checked_plain >= 1 and checked_gray >= 1


def test_no_jitter_views_and_a_separate_background_folder(tmp_path: Path, folder: Path) -> None:
    """Backgrounds from their own folder (pure blue JPEGs): outside the rectangle I_q is blue."""
    blue = tmp_path / "blue"
    blue.mkdir()
    for k in range(2):
        Image.new("RGB", (50 + 10 * k, 40), (0, 0, 255)).save(blue / f"b{k}.png")
    loader = loader_on(folder, normalize=False, background_root=str(blue), jitter_prob=0.0, grayscale_prob=0.0)
    for batch in loader:
        outside = batch.mask_q == 0
        pixels = batch.image_q.permute(0, 2, 3, 1)[outside]
        assert (pixels == torch.tensor([0, 0, 255], dtype=torch.uint8)).all()
        inside = batch.image_q.permute(0, 2, 3, 1)[batch.mask_q == 1].float()
        assert inside[:, 2].mean() < 250  # the foreground is not blue


def test_normalised_output_is_deterministic_and_resumable(folder: Path) -> None:
    def run(loader, batches):
        out = []
        for batch in loader:
            out.append(torch.cat([batch.image_q.flatten(), batch.image_k.flatten(), batch.mask_q.flatten().float()]))
            if len(out) == batches:
                break
        return out

    first = run(loader_on(folder), 2)
    second = run(loader_on(folder), 2)
    other = run(loader_on(folder, seed=3), 2)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])
    batch = next(iter(loader_on(folder)))
    assert batch.image_q.dtype == torch.float32 and batch.image_q.shape == (3, 3, S, S)
    loader = loader_on(folder)
    for _ in loader:
        state = loader.state_dict()
        break
    resumed = loader_on(folder)
    resumed.load_state_dict(state)
    assert torch.equal(run(resumed, 1)[0], first[1])
    assert len(loader_on(folder)) == 2


def test_bad_files_raise_naming_them_or_are_skipped(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", classes=1, per_class=4, seed=5, labelled=False)
    bad = root / "zz_bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(DatasetError) as caught:
        for _ in loader_on(root, batch_size=5):
            pass
    assert str(bad) in str(caught.value)
    loader = loader_on(root, batch_size=5, on_error="skip")
    assert sum(len(b) for b in loader) == 4
    assert set(loader.stats["skipped_images"]) == {"not a readable image"}
    bad.unlink()
    corrupt_jpeg(root / "img_01.jpg")
    loader = loader_on(root, batch_size=2, on_error="skip")
    assert sum(len(b) for b in loader) == 3
    assert loader.stats["skipped_images"]["corrupt image"] >= 1


@pytest.mark.gpu
def test_gpu_matches_cpu(folder: Path) -> None:
    """Same seed: identical masks; views equal up to decoder/resampler rounding; the GPU
    composition equals the NumPy twin applied to the GPU's own views."""
    options = dict(normalize=False, return_views=True)
    cpu = list(loader_on(folder, **options))
    gpu = list(loader_on(folder, **{**options, "device": "gpu"}))
    assert len(cpu) == len(gpu)
    for c, g in zip(cpu, gpu):
        assert g.image_q.is_cuda and g.mask_q.is_cuda
        for name in ("mask_q", "mask_k", "mask_q_feat", "mask_k_feat"):
            torch.testing.assert_close(getattr(g, name).cpu(), getattr(c, name), rtol=0, atol=0)
        for name in ("fg_q", "fg_k", "bg_q", "bg_k"):
            assert (g.views[name].cpu().float() - c.views[name].float()).abs().mean() < 3.0
        views = [g.views[k].cpu().numpy() for k in ("fg_q", "fg_k", "bg_q", "bg_k")]
        m_q = g.mask_q.cpu().numpy()[..., None].astype(bool)
        np.testing.assert_array_equal(g.image_q.permute(0, 2, 3, 1).cpu().numpy(), np.where(m_q, views[0], views[2]))
