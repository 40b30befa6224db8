"""CutMix for classification over an image folder (NumPy twin, source, graph, loader)."""
