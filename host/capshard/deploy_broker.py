"""Deploy the fleet's mosquitto: TLS, per-device passwords and ACLs.

A deployment is one directory:

    broker.json        address, provider user name, revoked devices
    ca.crt, ca.key     the deployment's CA (made here, EC P-256)
    server.crt/.key    the broker's certificate, signed by that CA
    credentials.json   passwords of the provider and of each device (mode 600)
    passwd             made from credentials.json by mosquitto_passwd (hashed)
    acl                the provider reads and writes the whole tree; each device
                       writes only its own birth/qos/ack/state/health and reads
                       only its own inst
    mosquitto.conf     TLS-only listener, no anonymous clients
    mosquitto.pid/.log

Adding or revoking a device rewrites passwd and acl and sends SIGHUP: mosquitto
reloads them without dropping the rest of the fleet (a revoked device that is
connected is disconnected by the reload).
"""

import datetime
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time

from .broker import find_mosquitto
from .wire import DEVICE_KINDS, INSTRUCTION, PREFIX

PROVIDER_USER = "capshard-provider"
DEFAULT_PORT = 8883
# Boards often boot without a set clock (an ESP32 starts in 2000): certificates
# valid from then verify before NTP, and still expire.
NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
VALID_DAYS = 3650


class BrokerDeployError(RuntimeError):
    pass


def _write_private(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _valid_id(device_id):
    return (bool(device_id) and len(device_id) <= 64 and device_id.isascii()
            and all(c.isalnum() or c in "_-" for c in device_id))


# ---- certificates ------------------------------------------------------------------
def make_certificates(directory, names):
    """A CA and a server certificate for ``names`` (host names and IPs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def pem_key(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    not_after = NOT_BEFORE + datetime.timedelta(days=VALID_DAYS + (
        datetime.datetime.now(datetime.timezone.utc) - NOT_BEFORE).days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capshard fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(NOT_BEFORE).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for n in names:
        sans.append(x509.DNSName(n))  # mbedTLS on boards matches names, also for IPs
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            pass
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write_private(os.path.join(directory, "ca.key"), pem_key(ca_key))
    _write(os.path.join(directory, "ca.crt"), ca.public_bytes(pem).decode())
    _write_private(os.path.join(directory, "server.key"), pem_key(key))
    _write(os.path.join(directory, "server.crt"), cert.public_bytes(pem).decode())


# ---- the deployment -----------------------------------------------------------------
class Deployment:
    def __init__(self, directory, settings):
        self.directory = os.path.abspath(directory)
        self.settings = settings

    host = property(lambda self: self.settings["host"])
    port = property(lambda self: self.settings["port"])
    provider_user = property(lambda self: self.settings["provider_user"])

    def path(self, name):
        return os.path.join(self.directory, name)

    # -- create / load --
    @classmethod
    def init(cls, directory, host="127.0.0.1", port=DEFAULT_PORT, bind="127.0.0.1", names=()):
        if os.path.exists(os.path.join(directory, "broker.json")):
            raise BrokerDeployError(f"{directory}: already a broker deployment (broker.json exists)")
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o700)
        dep = cls(directory, {"host": host, "port": port, "bind": bind,
                              "provider_user": PROVIDER_USER, "revoked": []})
        all_names = [host] + [n for n in ("localhost", "127.0.0.1", *names) if n != host]
        make_certificates(dep.directory, all_names)
        dep._save_credentials({"provider": secrets.token_urlsafe(24), "devices": {}})
        dep._save_settings()
        dep.write_files()
        return dep

    @classmethod
    def load(cls, directory):
        try:
            with open(os.path.join(directory, "broker.json")) as f:
                return cls(directory, json.load(f))
        except OSError:
            raise BrokerDeployError(f"{directory}: not a broker deployment "
                                    f"(run `capshard broker init {directory}`)") from None

    def _save_settings(self):
        _write(self.path("broker.json"), json.dumps(self.settings, indent=2, sort_keys=True) + "\n")

    def _credentials(self):
        with open(self.path("credentials.json")) as f:
            return json.load(f)

    def _save_credentials(self, creds):
        _write_private(self.path("credentials.json"), json.dumps(creds, indent=2, sort_keys=True))

    # -- secrets, for the tools that need them (never printed) --
    def provider_password(self):
        return self._credentials()["provider"]

    def device_password(self, device_id):
        return self._credentials()["devices"].get(device_id)

    def devices(self):
        return sorted(self._credentials()["devices"])

    def ca_der(self):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        with open(self.path("ca.crt"), "rb") as f:
            return x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)

    # -- generated files --
    def write_files(self):
        creds = self._credentials()
        self._write_passwd(creds)
        _write(self.path("acl"), acl_text(self.provider_user, sorted(creds["devices"])))
        _write(self.path("mosquitto.conf"), self.config_text())

    def _write_passwd(self, creds):
        lines = [f"{self.provider_user}:{creds['provider']}"]
        lines += [f"{d}:{pw}" for d, pw in sorted(creds["devices"].items())]
        tmp = self.path("passwd.new")
        _write_private(tmp, "\n".join(lines) + "\n")  # plain text only until hashed below
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        try:
            p = subprocess.run([tool, "-U", tmp], capture_output=True, text=True, timeout=30)
        except OSError as e:
            os.remove(tmp)
            raise BrokerDeployError(f"mosquitto_passwd not usable ({e}): apt-get install mosquitto") from None
        if p.returncode != 0:
            os.remove(tmp)
            raise BrokerDeployError(f"mosquitto_passwd failed: {p.stderr.strip()}")
        os.replace(tmp, self.path("passwd"))

    def config_text(self):
        d = self.directory
        return "\n".join([
            "# generated by `capshard broker`; regenerate instead of editing",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {d}/passwd",
            f"acl_file {d}/acl",
            f"pid_file {d}/mosquitto.pid",
            # Running as root, mosquitto would switch to user "mosquitto" and
            # lose access to this private directory: stay the invoking user.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence false",
            f"log_dest file {d}/mosquitto.log",
            "log_type error", "log_type warning", "log_type notice",
            "connection_messages true",
            "max_queued_messages 1000",
            f"listener {self.port} {self.settings.get('bind', '127.0.0.1')}",
            f"cafile {d}/ca.crt",
            f"certfile {d}/server.crt",
            f"keyfile {d}/server.key",
            "tls_version tlsv1.2",
            "require_certificate false",
            "",
        ])

    # -- devices --
    def add_device(self, device_id):
        """Create credentials for a device (idempotent); returns True if new."""
        if not _valid_id(device_id) or device_id == self.provider_user:
            raise BrokerDeployError(f"device id {device_id!r}: use letters, digits, '_' and '-' "
                                    f"(and not {self.provider_user!r})")
        creds = self._credentials()
        new = device_id not in creds["devices"]
        if new:
            creds["devices"][device_id] = secrets.token_urlsafe(24)
            self._save_credentials(creds)
        if device_id in self.settings["revoked"]:
            self.settings["revoked"].remove(device_id)
            self._save_settings()
        self.write_files()
        self.reload()
        return new

    def revoke_device(self, device_id):
        creds = self._credentials()
        if creds["devices"].pop(device_id, None) is None:
            raise BrokerDeployError(f"device {device_id!r} is not registered with this broker")
        self._save_credentials(creds)
        if device_id not in self.settings["revoked"]:
            self.settings["revoked"].append(device_id)
        self._save_settings()
        self.write_files()
        self.reload()

    # -- process --
    def pid(self):
        try:
            with open(self.path("mosquitto.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def listening(self):
        try:
            with socket.create_connection((self.settings.get("bind", "127.0.0.1"), self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self, timeout=10):
        if self.pid():
            raise BrokerDeployError(f"broker already running (pid {self.pid()})")
        self.write_files()
        p = subprocess.run([find_mosquitto(), "-c", self.path("mosquitto.conf"), "-d"],
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise BrokerDeployError(f"mosquitto did not start: {p.stderr.strip() or self.log_tail()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() and self.listening():
                return self.pid()
            time.sleep(0.05)
        raise BrokerDeployError(f"mosquitto is not listening on port {self.port}: {self.log_tail()}")

    def stop(self, timeout=10):
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        try:
            os.remove(self.path("mosquitto.pid"))
        except OSError:
            pass
        return True

    def reload(self):
        """SIGHUP: mosquitto re-reads passwd and acl; connected clients stay."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGHUP)
        return pid is not None

    def status(self):
        return {
            "directory": self.directory,
            "address": f"{self.host}:{self.port}",
            "running": self.pid() is not None,
            "pid": self.pid(),
            "listening": self.listening(),
            "tls": True,
            "devices": self.devices(),
            "revoked": list(self.settings["revoked"]),
        }

    def log_tail(self, lines=5):
        try:
            with open(self.path("mosquitto.log"), errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- clients on the provider side --
    def paho_tls(self, client, user=None, password=None):
        """Configure a paho client for this broker (TLS with our CA, credentials)."""
        client.tls_set(ca_certs=self.path("ca.crt"))
        client.username_pw_set(user or self.provider_user,
                               password if user else self.provider_password())
        return client


def acl_text(provider_user, devices):
    lines = ["# generated by `capshard broker`: the provider sees the whole tree;",
             "# each device writes only its own reports and reads only its own instructions.",
             f"user {provider_user}", f"topic readwrite {PREFIX}#", ""]
    for d in devices:
        lines.append(f"user {d}")
        lines += [f"topic write {PREFIX}{d}/{kind}" for kind in DEVICE_KINDS]
        lines.append(f"topic read {PREFIX}{d}/{INSTRUCTION}")
        lines.append("")
    return "\n".join(lines)
