"""Code generation: the optimised qlspec graph becomes a C++ project that computes it bit for bit.

    lower.py      graph -> C++ statements, one per node, with the kernel each uses (pure)
    requant.py    how a requantiser runs: its 3-axis view, folded bias, int32 or int64 lanes (pure)
    blob.py       the weights blob (every constant the C++ reads, aligned, in one file)
    project.py    writes the CMake project (runtime sources, network.cpp, weights.bin, toolchain file)
    toolchain.py  finds the cross compiler, qemu and ARM Compute Library, or says what is missing
    build.py      configures and builds the project, runs it (under qemu for aarch64) on .npy inputs

The C++ runtime (kernels, ACL glue, runner) lives in `backends/armcl/runtime` and is copied into
every generated project, so the project builds on its own, natively on the board too.
"""
