"""Balanced Copy-Paste: pastes from a class-balanced bank of instances."""
