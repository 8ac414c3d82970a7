"""Fixtures for the shard tests: a real FreeRADIUS on a free loopback port."""

import os
import shutil
import subprocess
import time

import pytest
from ports import free_udp_port

USERS = {"alice": "wonderland", "bob": "builder-42"}
SECRET = "s3cret-for-tests"

CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {d}
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/log
name = freeradius
confdir = {d}
modconfdir = {d}
certdir = {d}
cadir = {d}
run_dir = {d}/run
db_dir = {d}
libdir = /usr/lib/freeradius
dictdir = /usr/share/freeradius
pidfile = {d}/run/radiusd.pid
max_request_time = 5
cleanup_delay = 1
max_requests = 256
hostname_lookups = no
log {{
  destination = stdout
  auth = yes
}}
security {{
  allow_core_dumps = no
  reject_delay = 0
  status_server = no
}}
client local {{
  ipaddr = 127.0.0.1
  secret = {secret}
  require_message_authenticator = yes
}}
modules {{
  pap {{
    normalise = yes
  }}
  files {{
    filename = {d}/users
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
  }}
  authorize {{
    files
    pap
  }}
  authenticate {{
    Auth-Type PAP {{
      pap
    }}
  }}
  # Sign every answer (the client requires it, as the Blast-RADIUS advice says).
  post-auth {{
    update reply {{
      Message-Authenticator := 0x00
      Reply-Message := "welcome %{{User-Name}}"
    }}
    Post-Auth-Type REJECT {{
      update reply {{
        Message-Authenticator := 0x00
        Reply-Message := "denied"
      }}
    }}
  }}
}}
"""


def radiusd_binary():
    for name in ("freeradius", "radiusd"):
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if path:
            return path
    raise RuntimeError("FreeRADIUS is not installed: run tools/setup/freeradius.sh (apt-get install freeradius)")


class Radiusd:
    def __init__(self, directory, port, proc):
        self.dir, self.port, self.proc, self.secret = directory, port, proc, SECRET
        self.log_path = os.path.join(directory, "radiusd.log")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


@pytest.fixture(scope="module")
def radiusd(tmp_path_factory):
    """radiusd -X -f with a generated config dir, on a free loopback port."""
    binary = radiusd_binary()
    d = str(tmp_path_factory.mktemp("raddb"))
    for sub in ("log", "run"):
        os.makedirs(os.path.join(d, sub))
    port = free_udp_port()
    with open(os.path.join(d, "radiusd.conf"), "w") as f:
        f.write(CONF.format(d=d, port=port, secret=SECRET))
    with open(os.path.join(d, "users"), "w") as f:
        for user, pw in USERS.items():
            f.write(f'{user} Cleartext-Password := "{pw}"\n')
    open(os.path.join(d, "dictionary"), "w").close()
    log = open(os.path.join(d, "radiusd.log"), "wb")
    proc = subprocess.Popen([binary, "-X", "-f", "-d", d], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Radiusd(d, port, proc)
    try:
        deadline = time.monotonic() + 10
        while "Ready to process requests" not in server.log():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("radiusd did not start:\n" + server.log()[-3000:])
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
