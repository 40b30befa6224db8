"""Self-training Copy-Paste: pseudo-labelled unlabelled images mixed with labelled ones."""
