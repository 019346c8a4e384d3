"""The application spec: models, loader (with positions and extends), diff, JSON Schema."""
