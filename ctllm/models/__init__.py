"""Models: the registry of specs (embedded, hub, local, run outputs), loading, generation, scoring."""
