"""Mosaic: four images on a 2x2 grid (NumPy twin, source, graph, loader)."""
