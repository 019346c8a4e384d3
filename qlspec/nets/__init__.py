"""Network architectures (PyTorch modules) of the benchmark applications."""
