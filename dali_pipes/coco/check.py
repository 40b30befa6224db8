"""``decal check ANNOTATIONS IMAGES``: check a COCO/LVIS instance dataset before training.

Everything the loader would trip over later is looked at up front:

* the json, entry by entry, through the reader (:class:`~decal.dali_pipes.coco.reader.CocoDataset`
  with ``on_error="skip"``, so every bad image is counted, not only the first); each skipped
  image is then re-read alone with ``on_error="raise"`` to show the reader's own message
  (file, image or annotation id, field);
* annotation keys that look like typos of COCO fields (``"segmentaton"``, ``"catgory_id"``),
  which would otherwise be read as box-only or uncategorised instances;
* categories: how many, how many are used, names given twice, LVIS ``frequency`` tags;
* every image file: present, a JPEG or PNG header, and the size the json states (or, with
  ``decode=True``, a full decode).

The result is a :class:`CheckReport` and a summary table; ``decal check`` exits 0 when
there is no error, 1 when the data have errors, 2 on a usage error (a path that is not there).
"""

from __future__ import annotations

import difflib
import json
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .reader import CocoDataset
from ..core.errors import DatasetError
from ..core.options import OptionError

__all__ = ["CheckReport", "check_dataset", "run_check", "ANNOTATION_KEYS"]

#: Annotation keys of COCO/LVIS instance files and of decal's pseudo-labels.
ANNOTATION_KEYS = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "score", "attributes", "keypoints", "num_keypoints")
#: LVIS category frequency tags.
_FREQUENCIES = ("r", "c", "f")


@dataclass
class CheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        counts: name → number, in display order (images in the json, usable images,
            instances, categories, ...).
        errors: problem kind → count; any entry makes the check fail.
        warnings: problem kind → count; shown, but the check passes.
        examples: problem kind → up to ``max_listed`` messages naming file, id and field.
    """

    counts: dict[str, int] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    max_listed: int = 20

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, kind: str, message: str, *, error: bool = True, count: int = 1) -> None:
        (self.errors if error else self.warnings)[kind] += count
        listed = sum(len(v) for v in self.examples.values())
        if listed < self.max_listed:
            self.examples[kind].append(message)

    def table(self) -> str:
        """The summary table (plain text, one row per count and per problem kind)."""
        rows = [(name, str(value)) for name, value in self.counts.items()]
        rows += [(f"ERROR {kind}", str(n)) for kind, n in sorted(self.errors.items())]
        rows += [(f"warning {kind}", str(n)) for kind, n in sorted(self.warnings.items())]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name:<{width}}  {value:>8}" for name, value in rows]
        listed = [f"  - {m}" for messages in self.examples.values() for m in messages]
        if listed:
            lines += ["", "problems (first ones):"] + listed
        verdict = "OK" if self.ok else f"FAILED: {sum(self.errors.values())} errors"
        return "\n".join(lines + ["", verdict])


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None  # the reader reports it, with its own message
    return data if isinstance(data, dict) else None


def _check_keys(raw: dict[str, Any], report: CheckReport, annotation_file: Path) -> None:
    """Annotation keys that are near misses of COCO fields (the real one being absent)."""
    for ann in raw.get("annotations", []):
        if not isinstance(ann, dict):
            continue
        for key in ann:
            if key in ANNOTATION_KEYS:
                continue
            close = difflib.get_close_matches(key, ANNOTATION_KEYS, n=1, cutoff=0.8)
            if close and close[0] not in ann:
                report.add(
                    f"misspelt_{close[0]}",
                    f"{annotation_file}: annotation {ann.get('id')!r} (image {ann.get('image_id')!r}): "
                    f"field {key!r} is not a COCO field; did you mean {close[0]!r}?",
                )


def _check_categories(dataset: CocoDataset, report: CheckReport) -> None:
    used = Counter(a.category_id for r in dataset.records for a in r.annotations)
    report.counts["categories"] = len(dataset.categories)
    report.counts["categories used"] = sum(1 for c in dataset.categories if used[c])
    names = Counter(str(c.get("name")) for c in dataset.categories.values())
    for name, n in names.items():
        if n > 1:
            report.add("duplicate_category_name", f"{dataset.annotation_file}: category name {name!r} is given {n} times", error=False)
    for cid, entry in dataset.categories.items():
        tag = entry.get("frequency")
        if tag is not None and tag not in _FREQUENCIES:
            report.add(
                "invalid_frequency",
                f"{dataset.annotation_file}: category {cid}: field 'frequency': {tag!r} is not one of 'r', 'c', 'f'",
            )
    unused = len(dataset.categories) - report.counts["categories used"]
    if unused:
        report.warnings["categories without instances"] += unused


def _skipped_messages(raw: dict[str, Any], dataset: CocoDataset, report: CheckReport) -> None:
    """The reader's own message for each skipped image (each re-read alone, with raise)."""
    kept = {r.image_id for r in dataset.records}
    images = [img for img in raw.get("images", []) if isinstance(img, dict)]
    skipped = [img for img in images if img.get("id") not in kept]
    per_image: dict[Any, list] = defaultdict(list)
    for ann in raw.get("annotations", []):
        if isinstance(ann, dict):
            per_image[ann.get("image_id")].append(ann)
    with tempfile.TemporaryDirectory(prefix="decal-check-") as tmp:
        subset_file = Path(tmp) / "one_image.json"
        for img in skipped[: report.max_listed]:
            subset = {"images": [img], "annotations": per_image.get(img.get("id"), []), "categories": raw.get("categories", [])}
            subset_file.write_text(json.dumps(subset), encoding="utf-8")
            try:
                CocoDataset(subset_file, dataset.image_dir, on_error="raise")
                message = f"{dataset.annotation_file}: image {img.get('id')!r}: skipped (its id is shared with another entry)"
            except DatasetError as error:
                where = dataset.annotation_file if error.file == str(subset_file) else error.file
                message = str(DatasetError(where, error.reason, image_id=error.image_id, annotation_id=error.annotation_id, field=error.field))
            listed = sum(len(v) for v in report.examples.values())
            if listed < report.max_listed:
                report.examples.setdefault("skipped", []).append(message)


def _check_files(dataset: CocoDataset, report: CheckReport, decode: bool, threads: int) -> None:
    def check(index: int) -> DatasetError | None:
        if decode:
            return dataset.decode_check(index)
        try:
            dataset.read_image_bytes(index)
        except DatasetError as error:
            return error
        return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for error in pool.map(check, range(len(dataset))):
            if error is not None:
                kind = f"image_{error.field or 'file'}" if error.field in ("width", "height") else "unreadable_image"
                report.add(kind, str(error))
    report.counts["image files checked"] = len(dataset)


def check_dataset(
    annotation_file: str | Path,
    image_dir: str | Path,
    *,
    decode: bool = False,
    max_listed: int = 20,
    threads: int = 8,
) -> CheckReport:
    """Check the whole dataset; see the module docstring.

    Raises:
        OptionError: ``annotation_file`` is not a file or ``image_dir`` not a directory.
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise OptionError(f"ANNOTATIONS {annotation_file}: no such file")
    if not image_dir.is_dir():
        raise OptionError(f"IMAGES {image_dir}: no such directory")
    report = CheckReport(max_listed=max_listed)
    raw = _load_json(annotation_file) or {}
    report.counts["images in json"] = len(raw.get("images", [])) if isinstance(raw.get("images"), list) else 0
    report.counts["annotations in json"] = len(raw.get("annotations", [])) if isinstance(raw.get("annotations"), list) else 0
    try:
        dataset = CocoDataset(annotation_file, image_dir, on_error="skip")
    except DatasetError as error:  # the file as a whole is not usable
        report.add("invalid_file", str(error))
        return report
    _check_keys(raw, report, annotation_file)
    for reason, n in dataset.stats.skipped_images.items():
        report.errors[f"skipped_{reason}"] += n
    for reason, n in dataset.stats.dropped_instances.items():
        (report.errors if reason == "unknown_image_id" else report.warnings)[f"dropped_{reason}"] += n
    if dataset.stats.clipped_instances:
        report.warnings["clipped instances"] += dataset.stats.clipped_instances
    if dataset.stats.skipped_images:
        _skipped_messages(raw, dataset, report)
    box_only = sum(1 for r in dataset.records for a in r.annotations if a.segmentation is None)
    if box_only:
        report.warnings["instances without segmentation (masks = filled boxes)"] += box_only
    report.counts["images usable"] = len(dataset)
    report.counts["instances kept"] = sum(len(r.annotations) for r in dataset.records)
    _check_categories(dataset, report)
    _check_files(dataset, report, decode, threads)
    return report


def run_check(annotation_file: str | Path, image_dir: str | Path, *, decode: bool = False, max_listed: int = 20, out: TextIO | None = None) -> int:
    """``decal check``: print the summary table; 0 when clean, 1 when the data have errors."""
    out = out or sys.stdout
    report = check_dataset(annotation_file, image_dir, decode=decode, max_listed=max_listed)
    print(f"decal check: {annotation_file} (images in {image_dir})", file=out)
    print(report.table(), file=out)
    return 0 if report.ok else 1
