"""The options of the balanced Copy-Paste loader: the copy-paste ones
(``dali_pipes/copy_paste/options.py``, with ``max_num_pasted`` 10 by default) plus the
instance bank's, declared once (:class:`~decal.dali_pipes.core.option_schema.Option`).

``BalancedCopyPasteLoaderConfig`` (``dali_pipes/balanced/loader.py``) takes its fields,
defaults and bound checks from them (``with_options``); the
server validates a request's ``BalancedCopyPasteParams`` with the served ones
(``server/pipelines.py``), ``RemoteLoader`` forwards them, and the README's table of the
bank options repeats them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..copy_paste.options import COPY_PASTE_OPTIONS
from ..core.option_schema import Option

__all__ = ["BANK_OPTIONS", "BALANCED_COPY_PASTE_OPTIONS"]

#: The bank's options (after the copy-paste ones in the config).
BANK_OPTIONS: tuple[Option, ...] = (
    Option("bank_capacity", int, 1024, "the most instances the bank holds", low=1, high=1 << 20, served=True),
    Option("bank_max_bytes", int, 64 << 20, "the bank's memory cap in bytes (crop pixels, 4 bytes each)", low=1, high=1 << 34, served=True),
    Option(
        "bank_weighting", Literal["repeat_factor", "inverse_frequency", "uniform"], "inverse_frequency",
        "how a banked instance is drawn: r(c), 1/f(c)^p of the bank, or uniform",
        choices=("repeat_factor", "inverse_frequency", "uniform"), served=True,
    ),
    Option("bank_power", float, 1.0, "p of `inverse_frequency`", low=0.0, high=16.0, served=True),
    Option("bank_repeat_threshold", float, 0.001, "t of `repeat_factor` (0.001 in LVIS)", low=0.0, high=1.0, low_open=True, served=True),
    Option("bank_min_area", int, 16, "instances with fewer pixels are not banked", low=0, high=2**31 - 1, served=True),
)  # fmt: skip


def _balanced_default(option: Option) -> Option:
    return dataclasses.replace(option, default=10) if option.name == "max_num_pasted" else option


#: Every option of ``BalancedCopyPasteLoader``, in the config's field order.
BALANCED_COPY_PASTE_OPTIONS: tuple[Option, ...] = tuple(_balanced_default(o) for o in COPY_PASTE_OPTIONS) + BANK_OPTIONS
