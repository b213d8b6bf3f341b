#!/usr/bin/env bash
# System packages some tests drive for real (Debian names): Chromium for the chat page's browser tests,
# CJK fonts so its screenshots show Chinese, docker-compose to validate deploy/gpu/compose.yaml offline.
# Installs only what is missing; needs root or sudo. `.ci/run` calls it; run it once before the test command.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v docker-compose >/dev/null || need+=(docker-compose)
fc-list :lang=zh 2>/dev/null | grep -qi "noto sans cjk" || need+=(fonts-noto-cjk)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
