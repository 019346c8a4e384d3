# Cross-compiling for a Raspberry Pi 4 (Cortex-A72, aarch64 Debian/Raspberry Pi OS) from an x86-64
# Debian machine with g++-aarch64-linux-gnu and libarm-compute-dev:arm64 (multiarch) installed.
# On the board itself, build without this file: the native compiler finds the same paths.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Debian's arm64 multiarch libraries and headers live under /usr, not under the cross sysroot
set(QLSPEC_ACL_INCLUDE /usr/include/aarch64-linux-gnu CACHE PATH "ARM Compute Library headers")
set(QLSPEC_ACL_LIB /usr/lib/aarch64-linux-gnu CACHE PATH "ARM Compute Library libraries")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
