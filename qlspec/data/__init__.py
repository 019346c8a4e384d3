"""Data sets of the benchmark applications: the in-memory `FaceSet` and its synthetic generator."""
