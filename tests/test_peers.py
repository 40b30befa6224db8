"""The peers mode's plumbing on the CPU (tiny sizes): the same batch reaches decal, kornia and
torchvision in the layouts each takes, every row is measured or skipped with a reason, and
``decal bench --modes peers`` without a GPU says why it skipped. No timing is asserted."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from decal.bench import peers
from decal.bench.data import make_bench_dataset
from decal.bench.sample_batch import sample_batch
from decal.bench.throughput import mode_peers, peers_markdown


@pytest.fixture(scope="module")
def arrays(tmp_path_factory) -> peers.PeerArrays:
    data = make_bench_dataset(tmp_path_factory.mktemp("peers") / "data", 6, seed=5)
    return peers.PeerArrays(sample_batch(data, 4, 48, seed=1), "cpu")


def test_peer_inputs_are_the_same_batch(arrays) -> None:
    assert arrays.images.shape == (4, 48, 48, 3) and arrays.images.dtype == np.uint8
    np.testing.assert_array_equal(arrays.images_nchw_u8.numpy(), arrays.images.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(arrays.images_nchw_f32.numpy(), arrays.images.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    label_map = arrays.label_map.numpy()
    assert label_map.shape == (4, 48, 48) and label_map.dtype == np.int64
    for b in range(4):
        lo, hi = arrays.offsets[b], arrays.offsets[b + 1]
        masks = arrays.masks[lo:hi].astype(bool)
        # a pixel's label is 1 + the last instance of its image covering it, 0 where none does
        expected = np.zeros((48, 48), np.int64)
        for k in range(hi - lo):
            expected[masks[k]] = k + 1
        np.testing.assert_array_equal(label_map[b], expected)
    assert label_map.max() > 0
    assert arrays.image_labels.tolist() == arrays.labels[arrays.offsets[:-1]].tolist()


def test_rows_are_measured_or_skipped_with_a_reason(arrays) -> None:
    rows = peers.copy_paste_rows(arrays, repeats=1) + peers.cutmix_rows(arrays, repeats=1)
    names = [r["name"] for r in rows]
    assert names == ["decal copy_paste_batch_fused", "kornia RandomTransplantation",
                     "decal CutMix (draw, composite, targets)", "torchvision v2.CutMix"]
    for row in rows:
        assert "error" not in row, row
        if "skipped" in row:
            assert row["name"].split()[0] in row["skipped"]
            continue
        assert row["ms"] > 0 and row["images_per_s"] == pytest.approx(4 / row["ms"] * 1e3, rel=1e-2)
        assert row["device_memory_gib"] is None  # no device memory on the CPU


def test_missing_peer_package_skips_its_row(arrays, monkeypatch) -> None:
    real = importlib.import_module

    def without_kornia(name, *args, **kwargs):
        if name.startswith("kornia"):
            raise ImportError("No module named 'kornia'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(peers.importlib, "import_module", without_kornia)
    rows = peers.copy_paste_rows(arrays, repeats=1)
    assert rows[0]["ms"] > 0
    assert rows[1] == {"name": "kornia RandomTransplantation",
                       "skipped": "kornia.augmentation not importable (ImportError: No module named 'kornia')"}


def test_failing_peer_is_an_error_row_not_a_crash(arrays, monkeypatch) -> None:
    class Exploding:
        def CutMix(self, num_classes):  # noqa: N802 (torchvision's name)
            def call(*inputs):
                raise RuntimeError("CUDA error: out of memory")
            return call

    monkeypatch.setattr(peers, "_module", lambda name: (Exploding(), None))
    rows = peers.cutmix_rows(arrays, repeats=1)
    assert rows[0]["ms"] > 0
    assert rows[1] == {"name": "torchvision v2.CutMix", "error": "RuntimeError: CUDA error: out of memory"}


def test_bench_mode_without_gpu_says_why(monkeypatch) -> None:
    monkeypatch.setattr(sys.modules["decal.bench.throughput"], "gpu_info", lambda: None)
    result = mode_peers(argparse.Namespace(batch_size=64, output_size=1024, seed=0), (Path("x.json"), Path("x")))
    assert result["rows"] == [] and "needs a GPU" in result["skipped"]
    assert peers_markdown(result) == ["", f"Peers: {result['skipped']}."]
    table = peers_markdown({"batch_size": 4, "output_size": 48, "rows": [
        {"name": "decal CutMix", "ms": 1.0, "images_per_s": 4000.0, "device_memory_gib": 0.5, "note": "n"},
        {"name": "torchvision v2.CutMix", "skipped": "torchvision.transforms.v2 not importable"}]})
    assert table[-2] == "| decal CutMix | 1.0 | 4000.0 | 0.5 | n |"
    assert table[-1] == "| torchvision v2.CutMix | — | — | — | torchvision.transforms.v2 not importable |"
