#!/usr/bin/env bash
# Install ofa-edge on a fresh Debian machine (as root): the system packages, a virtualenv in
# .venv, and the locked Python set from constraints.txt. `./install.sh --test` adds the test extras;
# `--firmware` adds only the Arm toolchain and qemu-system-arm that MCU firmware builds need.
set -euo pipefail
cd "$(dirname "$0")"

extras=""
firmware=""
case "${1:-}" in
  "") ;;
  --test) extras="[test]"; firmware=1 ;;  # and Chromium, which the dashboard test opens headless
  --firmware) firmware=1 ;;
  *) echo "install.sh: unknown option '$1' (use --test, --firmware or nothing)" >&2; exit 2 ;;
esac

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> system packages (apt-get)"
  apt-get update -qq
  pkgs=(dataset-fashion-mnist openssh-server iproute2 g++)
  python3 -c "import ensurepip, venv" 2>/dev/null || pkgs+=(python3-venv python3-pip)
  if [ -n "$extras" ]; then pkgs+=(chromium qemu-user); fi  # qemu-user: the emulated aarch64 device
  if [ -n "$firmware" ]; then  # MCU firmware: build with the Arm GNU toolchain, run under qemu-system-arm
    pkgs+=(gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm)
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
else
  echo "==> not root or no apt-get: skipping system packages (dataset-fashion-mnist, openssh-server, iproute2, g++)"
fi

python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
  echo "install.sh: ofa-edge needs Python 3.11 (onnx2tf 1.29.24 and tensorflow 2.19 pin it); found $(python3 --version)" >&2
  exit 2
}

echo "==> virtualenv .venv and the locked Python set (torch 2.13.0 CPU, tensorflow 2.19, onnx2tf 1.29.24)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
.venv/bin/python -m pip check --disable-pip-version-check >/dev/null || {
  echo "install.sh: pip check found broken requirements (run .venv/bin/pip check)" >&2; exit 2; }
echo "==> installed: $(.venv/bin/ofa-edge --version)"
