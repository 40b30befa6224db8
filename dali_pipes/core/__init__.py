"""The parts every loader shares: epoch source and position, samplers, batch, step I/O, loader base, options and their checks, backends, errors."""
