"""Random inputs for the GPU mask path's tests (CPU twins, the CUDA emulation and the GPU):
polygons of every awkward kind, RLE masks, whole random batches with their geometry, and
Copy-Paste batches. Imports nothing beyond NumPy and decal's kernels (no hypothesis, no DALI),
so the GPU machine needs little."""

from __future__ import annotations

import numpy as np

from decal.kernels.instance_masks import MaskDescriptors
from decal.kernels.mask_geometry import sample_geometry
from decal.kernels.rasterize_polygons import rasterize_polygons_emulated
from decal.kernels.rle_decode import rle_decode_emulated, toggles_from_counts


def random_polygon(rng: np.random.Generator, h: int, w: int, style: int) -> np.ndarray:
    """(K, 2) polygons of several kinds: convex-ish, grid-snapped (pixel centres / edges),
    degenerate (duplicate and collinear points), slivers, and far outside the image."""
    n = int(rng.integers(3, 24))
    if style == 0:
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.05, 0.6) * min(h, w) + 0.5
        return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).clip(0, [w, h])
    if style == 1:
        return np.stack([rng.integers(0, 2 * w + 1, n) / 2, rng.integers(0, 2 * h + 1, n) / 2], 1)
    if style == 2:
        xy = np.stack([rng.integers(0, w + 1, n), rng.integers(0, h + 1, n)], 1).astype(float)
        xy[1] = xy[0]
        return xy
    if style == 3:
        return np.stack([rng.uniform(0, w, n), 0.5 * h + rng.uniform(-0.3, 0.3, n)], 1)
    if style == 4:  # border object: touches two image borders
        return np.array([[0.0, 0.0], [rng.uniform(1, w), 0.0], [0.0, rng.uniform(1, h)]])
    return np.stack([rng.uniform(-w, 2 * w, n), rng.uniform(-h, 2 * h, n)], 1)


def random_rle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Toggles of a random mask: noise, a block touching the last column, full or empty."""
    kind = rng.integers(0, 4)
    m = np.zeros((h, w), np.uint8)
    if kind == 0:
        m = (rng.random((h, w)) < 0.3).astype(np.uint8)
    elif kind == 1:
        m[int(rng.integers(0, h)) :, int(rng.integers(0, w)) :] = 1
    elif kind == 2:
        m[:] = 1
    flat = m.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    counts = ([0] if flat.size and flat[0] else []) + runs.tolist()
    return toggles_from_counts(counts, h, w)


def random_batch(rng: np.random.Generator, batch: int, side: int, max_instances: int = 5, *, rle: bool = True):
    """(instances per sample, geometries) of a random batch; sample 0 has no instance."""
    samples, geometries = [], []
    for b in range(batch):
        h, w = int(rng.integers(1, 160)), int(rng.integers(1, 160))
        geometries.append(
            sample_geometry(h, w, rng.uniform(0.1, 2.5), rng.uniform(), rng.uniform(), int(rng.integers(0, 2)), side)
        )
        insts = []
        for _ in range(0 if b == 0 else int(rng.integers(0, max_instances + 1))):
            if rle and rng.random() < 0.3:
                insts.append(("rle", random_rle(rng, h, w)))
            else:
                k = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
                insts.append(("poly", [random_polygon(rng, h, w, int(rng.integers(0, 6))) for _ in range(k)]))
        samples.append(insts)
    return samples, geometries


def emulate(desc: MaskDescriptors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CUDA kernels' algorithms (NumPy ports) over a whole batch."""
    m = desc.num_instances
    masks = np.full((m, desc.height, desc.width), 0xAB, np.uint8)
    areas = np.full(m, -1, np.int64)
    boxes = np.full((m, 4), -1, np.float32)
    rasterize_polygons_emulated(desc.verts, desc.polys, desc.poly_instances, desc.tables, masks, areas, boxes)
    rle_decode_emulated(desc.toggles, desc.rle_instances, desc.tables, masks, areas, boxes)
    return masks, areas, boxes


FIELDS = ("images", "masks", "boxes", "areas", "instance_offsets", "labels", "iscrowd", "pasted")


def random_case(rng: np.random.Generator, batch: int, h: int, w: int, max_inst: int = 6):
    counts = rng.integers(0, max_inst + 1, batch)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    m = int(offsets[-1])
    masks = np.zeros((m, h, w), np.uint8)
    for i in range(m):
        kind = rng.integers(0, 4)
        if kind == 0:
            continue  # empty (never pasted, always dropped)
        y0, y1 = np.sort(rng.integers(0, h + 1, 2))
        x0, x1 = np.sort(rng.integers(0, w + 1, 2))
        masks[i, y0:y1, x0:x1] = 1
        if kind == 3:
            masks[i] = rng.random((h, w)) < 0.5
    images = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    return images, masks, offsets, rng.integers(1, 9, m), rng.random(m) < 0.15
