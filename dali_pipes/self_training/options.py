"""The options of the self-training Copy-Paste loader: the copy-paste ones
(``dali_pipes/copy_paste/options.py``) plus the second set's, declared once
(:class:`~decal.dali_pipes.core.option_schema.Option`).

``SelfTrainingLoaderConfig`` (``dali_pipes/self_training/loader.py``) takes its fields,
defaults and bound checks from them (``with_options``); the server validates
a request's ``SelfTrainingParams`` with the served ones (``server/pipelines.py``; the second
set is a registered dataset named by ``second_dataset``, never a path), ``RemoteLoader``
forwards them, and the README's self-training table repeats them.
"""

from __future__ import annotations

from ..copy_paste.options import COPY_PASTE_OPTIONS
from ..core.option_schema import Option

__all__ = ["SECOND_SET_OPTIONS", "SELF_TRAINING_OPTIONS"]

#: The second set's options (after the copy-paste ones in the config).
SECOND_SET_OPTIONS: tuple[Option, ...] = (
    Option("second_ratio", float, 0.5, "share of each batch from the second set (floor(ratio·B) images), in [0, 1)", low=0.0, high=0.999999, served=True),
    Option("paste_into_labelled", bool, True, "labelled images receive pasted instances too", served=True),
)  # fmt: skip

#: Every option of ``SelfTrainingLoader``, in the config's field order.
SELF_TRAINING_OPTIONS: tuple[Option, ...] = COPY_PASTE_OPTIONS + SECOND_SET_OPTIONS
