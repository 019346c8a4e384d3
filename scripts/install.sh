#!/usr/bin/env bash
# Installs everything qlspec needs on a fresh Debian machine with Python 3.11 and pip:
# - Debian's arm64 multiarch ARM Compute Library 20.08, the aarch64 cross compiler, qemu-user and
#   CMake, for the ARM-CL backend (cross-build here, run as a Cortex-A72 under qemu; DESIGN.md 6),
#   libpng and libjpeg (host and arm64) for the C++ application's photo decoding, and OpenSSH
#   (client, and the server the deploy tests start on 127.0.0.1 as a loopback board),
#   skipped when already there;
# - the CPU build of torch 2.13.0 (an unpinned torch would pull a multi-GB CUDA build), then qlspec
#   itself, editable, with its test extras, at the versions in constraints.txt.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=0
for tool in cmake g++ aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
[ -e /usr/include/aarch64-linux-gnu/arm_compute/runtime/NEON/NEFunctions.h ] || need_apt=1
[ -e /usr/lib/aarch64-linux-gnu/libarm_compute.so ] || need_apt=1
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1 || need_apt=1
native=$(dpkg --print-architecture)  # qualified: with arm64 beside it, a bare name is ambiguous to dpkg -s
dpkg -s "libpng-dev:$native" "libjpeg62-turbo-dev:$native" libpng-dev:arm64 libjpeg62-turbo-dev:arm64 >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    cmake g++ g++-aarch64-linux-gnu qemu-user libarm-compute-dev:arm64 openssh-client openssh-server \
    libpng-dev libjpeg62-turbo-dev libpng-dev:arm64 libjpeg62-turbo-dev:arm64
fi

"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]" -c constraints.txt  # the tested versions
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
