"""Preview grids of loader batches (PNG), for the CLI and the control plane."""
