#!/usr/bin/env bash
# Installs what the tests that build networks need, from Debian's packages,
# when it is missing: iptables (iproute2's `ip` comes with the system).
# Exit 3 when the tools are missing and cannot be installed (not root, no
# package mirror), so callers can say so.
set -euo pipefail
command -v ip >/dev/null || { echo "install-test-tools: no 'ip' command (iproute2)" >&2; exit 3; }
command -v iptables >/dev/null && exit 0
[ "$(id -u)" = 0 ] || { echo "install-test-tools: iptables is missing, and installing it needs root" >&2; exit 3; }
echo "install-test-tools: installing iptables"
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables; } >/dev/null 2>&1 \
    || { echo "install-test-tools: iptables could not be installed" >&2; exit 3; }
