"""decal's augmentation kernels: one operation per module, each with a CUDA source (``.cu``),
a CuPy launcher (``<op>_cupy``), a NumPy twin (``<op>_numpy``, the specification and the CPU
path) and a dispatcher (``<op>``) that picks by the array type of its first argument.

Import from the modules, e.g. ``from decal.kernels.mask_boxes import mask_boxes``. Nothing is
re-exported here on purpose: each module shares its name with its operation, and a package
attribute would be shadowed by the submodule as soon as that is imported. Importing any module
is cheap and never touches the GPU (CuPy is imported only when a launcher runs).
"""
