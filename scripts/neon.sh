#!/usr/bin/env bash
# The aarch64 (NEON) kernels on an x86 host: cross-compiles the CPU crates for
# aarch64-unknown-linux-gnu, lints them (clippy -D warnings) and runs their tests under
# qemu-user. Correctness only: emulated timings mean nothing.
#
# Usage: scripts/neon.sh [--if-available] [--all] [extra cargo test arguments]
#   default: ternary-core (every kernel at the NEON and scalar levels, checked against the
#            references) and ternary-sparsity (the portable skip kernels)
#   --all:   also ternary-vsa and ternary-runtime (the decode runtime's logits tests; builds
#            Burn for aarch64, about 10 minutes more)
#   --if-available: if the cross tools or the Rust target cannot be installed (no network),
#            say so loudly and exit 0 instead of failing (what .ci/run uses)
# Installs with apt what it lacks (qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)
# and the Rust target with rustup. The child-process test of ternary-core reads the emulator
# from TERNARY_TEST_RUNNER (no binfmt_misc is needed).
set -euo pipefail
cd "$(dirname "$0")/.."

IF_AVAILABLE=0
PACKAGES=(-p ternary-core -p ternary-sparsity)
EXTRA=()
while (($#)); do
  case "$1" in
    --if-available) IF_AVAILABLE=1 ;;
    --all) PACKAGES+=(-p ternary-vsa -p ternary-runtime) ;;
    *) EXTRA+=("$1") ;;
  esac
  shift
done

TARGET=aarch64-unknown-linux-gnu
unavailable() {
  if ((IF_AVAILABLE)); then
    echo "NEON TESTS NOT RUN: $1" >&2
    exit 0
  fi
  echo "error: $1" >&2
  exit 1
}

if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
  || [ ! -d /usr/aarch64-linux-gnu/lib ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu \
      libc6-dev-arm64-cross >/dev/null; } \
    || unavailable "could not install qemu-user and the aarch64 cross compiler with apt"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >/dev/null 2>&1 \
    || unavailable "could not add the Rust target $TARGET with rustup"
fi

RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$RUNNER"
export TERNARY_TEST_RUNNER="$RUNNER"
# The emulated CPU (qemu's default "max") has NEON; a test asserts that the NEON level is
# detected, so the kernels below really run at that level.
echo "neon: $(qemu-aarch64 --version | head -1); packages: ${PACKAGES[*]}"
cargo clippy --target "$TARGET" "${PACKAGES[@]}" --all-targets -- -D warnings
# The kernel tests compare every available level (NEON and scalar here) with the references.
cargo test --target "$TARGET" "${PACKAGES[@]}" "${EXTRA[@]}"
