"""Loader options are checked where the config is made, with errors naming the option, and
one device vocabulary (``auto``, ``cpu``, ``gpu``, ``cuda``, ``cuda:N``) serves every loader."""

from __future__ import annotations

import warnings

import pytest

from decal.dali_pipes.core.backend import Device, gpu_available, parse_device, resolve_backend
from decal.dali_pipes.cutmix.loader import CutMixLoaderConfig
from decal.dali_pipes.cp2.loader import CP2LoaderConfig
from decal.dali_pipes.mosaic.loader import MosaicLoaderConfig
from decal.dali_pipes.core.options import OptionError
from decal.dali_pipes.coco.sample_data import ensure_sample_dataset
from decal.dali_pipes.core.scale_jitter import ScaleJitter
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader, CopyPasteLoaderConfig


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"output_size": "1024"}, "option 'output_size' must be an int, got '1024' (str)"),
        ({"batch_size": 2.0}, "option 'batch_size' must be an int"),
        ({"jitter": 1.5}, "option 'jitter': expected 'lsj', 'ssj', 'none' or (min, max), got 1.5"),
        ({"jitter": "big"}, "option 'jitter'"),
        ({"jitter": (2.0, 1.0)}, "option 'jitter'"),
        ({"batch_size": 0}, "option 'batch_size' must be >= 1, got 0"),
        ({"flip_prob": 1.5}, "option 'flip_prob' must be in [0.0, 1.0]"),
        ({"copy_paste": "yes"}, "option 'copy_paste' must be true or false"),
        ({"on_error": "ignore"}, "option 'on_error' must be one of 'raise', 'skip'"),
        ({"shard_id": 2, "num_shards": 2}, "option 'shard_id' must be in [0, num_shards=2)"),
        ({"device": "tpu"}, "option 'device': expected auto, cpu, gpu, cuda, cuda:N, got 'tpu'"),
        ({"device": "cuda:1", "device_id": 3}, "'device' is 'cuda:1' but 'device_id' is 3"),
    ],
)
def test_copy_paste_config_names_the_bad_option(options: dict, expected: str) -> None:
    with pytest.raises(OptionError) as caught:
        CopyPasteLoaderConfig(**options)
    assert str(caught.value).startswith("CopyPasteLoader: ")
    assert expected in str(caught.value)


def test_other_loader_configs_are_checked_the_same_way() -> None:
    with pytest.raises(OptionError, match="CutMixLoader: option 'mode' must be one of"):
        CutMixLoaderConfig(mode="pairs")
    with pytest.raises(OptionError, match=r"CP2Loader: option 'scale' must be a list of 2 values"):
        CP2LoaderConfig(scale=(0.2,))
    with pytest.raises(OptionError, match="MosaicLoader: option 'mosaic_prob' must be in"):
        MosaicLoaderConfig(mosaic_prob=-0.1)


def test_valid_values_pass_unchanged() -> None:
    cfg = CopyPasteLoaderConfig(jitter=[0.5, 1.5], bbox_occluded_thr=10, repeat_factor_threshold=None)
    assert cfg.jitter == [0.5, 1.5] and cfg.bbox_occluded_thr == 10
    assert ScaleJitter.parse(cfg.jitter) == ScaleJitter(0.5, 1.5)
    assert MosaicLoaderConfig(center_range=[0.3, 0.7]).center_range == [0.3, 0.7]


@pytest.mark.parametrize(
    "value, device",
    [
        (None, Device("auto")),
        ("auto", Device("auto")),
        ("cpu", Device("cpu")),
        ("CPU", Device("cpu")),
        ("gpu", Device("gpu")),
        ("cuda", Device("gpu")),
        ("cuda:3", Device("gpu", 3)),
        ("gpu:1", Device("gpu", 1)),
    ],
)
def test_parse_device_vocabulary(value: str | None, device: Device) -> None:
    assert parse_device(value) == device


@pytest.mark.parametrize("value", ["tpu", "cuda:", "cuda:-1", "cuda:x", 0, ""])
def test_parse_device_refuses_other_names(value: object) -> None:
    with pytest.raises(OptionError, match="'--device': expected auto, cpu, gpu, cuda, cuda:N"):
        parse_device(value, "--device")


def test_torch_device_strings() -> None:
    assert Device("cpu").torch_device() == "cpu"
    assert Device("gpu").torch_device() == "cuda:0"
    assert Device("gpu", 2).torch_device() == "cuda:2"


def test_cuda_index_becomes_gpu_and_device_id() -> None:
    cfg = CopyPasteLoaderConfig(device="cuda:2")
    assert (cfg.device, cfg.device_id) == ("gpu", 2)
    assert CutMixLoaderConfig(device="cuda").device == "cuda"
    assert resolve_backend("cpu") == "cpu"


@pytest.mark.skipif(gpu_available(), reason="checks the message without a GPU")
def test_gpu_without_a_gpu_is_an_option_error() -> None:
    for name in ("gpu", "cuda", "cuda:1"):
        with pytest.raises(OptionError, match="no CUDA device is usable"):
            resolve_backend(name)


def test_empty_epoch_warns_once_with_the_numbers() -> None:
    annotations, images = ensure_sample_dataset()
    loader = CopyPasteLoader(annotations, images, batch_size=4, drop_last=True, output_size=64, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(loader) == []
        assert list(loader) == []
    messages = [str(w.message) for w in caught if "0 batches" in str(w.message)]
    assert len(messages) == 1
    assert "holds 2 images, batch_size=4, drop_last=True" in messages[0]
