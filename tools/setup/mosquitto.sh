#!/bin/sh
# mosquitto is a real dependency of the demo and the tests: install it when
# missing (Debian/Ubuntu packages `mosquitto`, `mosquitto-clients`). Idempotent.
set -e
if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "installing mosquitto (apt)"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mosquitto mosquitto-clients
