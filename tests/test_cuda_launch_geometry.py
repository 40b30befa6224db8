"""Launch geometry shared by the per-plane kernels (``kernels/_cuda.py``: ``row_blocks``,
``plane_grid``), checked without a GPU: the SM count is set by the test and the arrays are
stand-ins with a device address."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from decal.kernels import _cuda


def _at(address: int) -> SimpleNamespace:
    """A stand-in for a CuPy array at device ``address``."""
    return SimpleNamespace(data=SimpleNamespace(ptr=address))


@pytest.fixture(autouse=True)
def sms(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(_cuda, "current_device_sms", lambda: 132)
    return 132


def test_row_blocks_cover_a_row_up_to_32_blocks_per_sm() -> None:
    assert _cuda.row_blocks(1000, 1, 256) == 4  # a small row: ceil(1000 / 256) blocks
    assert _cuda.row_blocks(10**7, 1, 256) == 32 * 132  # a large one: capped at 32 per SM
    assert _cuda.row_blocks(10**6, 8, 256) == 528  # shared over 8 rows: ceil(4224 / 8)
    assert _cuda.row_blocks(10**6, 10**5, 256) == 1  # more rows than the cap: one block a row


def test_plane_grid_reads_words_when_the_plane_and_every_array_are_aligned() -> None:
    grid = _cuda.plane_grid(2, 64 * 64, 256, "planes", _at(4096), _at(8192))
    assert grid == _cuda.PlaneGrid(vec4=True, words=1024, blocks_x=4)
    assert _cuda.plane_grid(2, 64 * 64, 256, "planes", _at(4096), _at(8193)) == _cuda.PlaneGrid(False, 4096, 16)
    assert _cuda.plane_grid(2, 63 * 63, 256, "planes", _at(4096)) == _cuda.PlaneGrid(False, 3969, 16)


def test_plane_grid_has_nothing_to_launch_for_no_rows_or_empty_planes() -> None:
    assert _cuda.plane_grid(0, 64, 256, "planes") is None
    assert _cuda.plane_grid(3, 0, 256, "planes") is None


def test_plane_grid_names_the_rows_over_the_grid_limit() -> None:
    with pytest.raises(ValueError, match="output masks=65536 exceeds the CUDA grid limit"):
        _cuda.plane_grid(_cuda.MAX_GRID_YZ + 1, 64, 256, "output masks")
