"""Copy-Paste for instance segmentation: options, source, DALI graph and step, loader; the GPU-mask variant."""
