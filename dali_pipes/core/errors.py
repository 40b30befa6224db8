"""Errors raised by decal's dataset readers.

Every problem found in a dataset is a :class:`DatasetError`, which names *where* the
problem is (the json file or the image file, the image id, the annotation id and the
json field) so that a user can find and fix the offending entry without a debugger.
"""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset file (annotation json or image) is malformed or inconsistent.

    Attributes:
        file: path of the json file or of the image file the problem is in (``str``).
        image_id: id of the image concerned, or ``None``.
        annotation_id: id of the annotation concerned, or ``None``.
        field: json field at fault (e.g. ``"segmentation"``, ``"category_id"``,
            ``"width"``, ``"file_name"``), or ``None`` when the file as a whole is at fault.
        reason: the bare description of the problem, without the location prefix.

    ``str(err)`` always contains every attribute that is set, e.g.::

        instances.json: annotation 17 (image 3): field 'segmentation': polygon with 2 points (needs >= 3)

    The exception pickles (it travels back from DALI's parallel external-source workers).
    """

    def __init__(
        self,
        file: str | object,
        reason: str,
        *,
        image_id: int | None = None,
        annotation_id: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file)
        self.reason = reason
        self.image_id = image_id
        self.annotation_id = annotation_id
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        return ": ".join([*self.location(), self.reason])

    def location(self, file: str | None = None) -> list[str]:
        """The parts of the message before the reason: the file (or ``file`` in its place, a
        name a client may see), then image / annotation id and field when set."""
        parts = [self.file if file is None else file]
        if self.annotation_id is not None and self.image_id is not None:
            parts.append(f"annotation {self.annotation_id} (image {self.image_id})")
        elif self.annotation_id is not None:
            parts.append(f"annotation {self.annotation_id}")
        elif self.image_id is not None:
            parts.append(f"image {self.image_id}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return parts

    def __reduce__(self):  # keep keyword-only attributes through pickling
        return (
            _rebuild,
            (self.file, self.reason, self.image_id, self.annotation_id, self.field),
        )


def _rebuild(file, reason, image_id, annotation_id, field) -> DatasetError:
    return DatasetError(
        file, reason, image_id=image_id, annotation_id=annotation_id, field=field
    )


def skip_reason(error: DatasetError) -> str:
    """The short reason under which a skipped item is counted, e.g. ``"not a readable image"``."""
    return error.reason.split(":", 1)[0]
