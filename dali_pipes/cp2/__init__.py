"""CP²: foreground crops pasted on two backgrounds, two views (NumPy twin, source, graph, loader)."""
