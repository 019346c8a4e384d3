"""Task metrics (accuracy measures) of the benchmark applications."""
