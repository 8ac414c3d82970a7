#!/bin/sh
# FreeRADIUS is a real dependency of the RADIUS auth shard's tests: install it
# when missing (Debian/Ubuntu package `freeradius`). Idempotent.
set -e
if command -v freeradius >/dev/null 2>&1 || command -v radiusd >/dev/null 2>&1 \
   || test -x /usr/sbin/freeradius || test -x /usr/sbin/radiusd; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "installing freeradius (apt)"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends freeradius
# The package enables a system service; the tests run their own radiusd on a
# private port with a generated config, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now freeradius >/dev/null 2>&1 || true
fi
