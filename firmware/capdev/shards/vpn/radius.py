# RADIUS packets for a PAP client (RFC 2865), with Message-Authenticator
# (RFC 3579 3.2; RFC 5080 and the 2024 "Blast-RADIUS" advice: send it first
# and require it in answers). Pure: bytes in, bytes out.
import hashlib

from capdev import platform

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCESS_CHALLENGE = 11

USER_NAME = 1
USER_PASSWORD = 2
NAS_IP_ADDRESS = 4
REPLY_MESSAGE = 18
NAS_IDENTIFIER = 32
MESSAGE_AUTHENTICATOR = 80

MAX_PACKET = 4096
MAX_PASSWORD = 128


class RadiusError(Exception):
    """A packet that cannot be built or does not verify; str() says why."""


def _md5(data):
    return hashlib.md5(data).digest()


def hmac_md5(key, msg):
    # RFC 2104 with MD5 (Message-Authenticator); MicroPython has no hmac module.
    if len(key) > 64:
        key = _md5(key)
    key = key + bytes(64 - len(key))
    inner = _md5(bytes(k ^ 0x36 for k in key) + msg)
    return _md5(bytes(k ^ 0x5C for k in key) + inner)


def _xor16(a, b):
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def hide_password(password, secret, authenticator):
    """User-Password (RFC 2865 5.2): padded to 16s, chained MD5 XOR."""
    if len(password) > MAX_PASSWORD:
        raise RadiusError("password longer than " + str(MAX_PASSWORD) + " bytes")
    pad = -len(password) % 16 if password else 16
    p = password + bytes(pad)
    out = b""
    prev = authenticator
    for i in range(0, len(p), 16):
        c = _xor16(p[i:i + 16], _md5(secret + prev))
        out += c
        prev = c
    return out


def _attr(kind, value):
    if len(value) > 253:
        raise RadiusError("attribute " + str(kind) + " longer than 253 bytes")
    return bytes((kind, len(value) + 2)) + value


def access_request(ident, secret, authenticator, user, password, nas_id):
    """An Access-Request for PAP, Message-Authenticator first."""
    attrs = (_attr(USER_NAME, user) + _attr(USER_PASSWORD, hide_password(password, secret, authenticator))
             + _attr(NAS_IDENTIFIER, nas_id))
    length = 20 + 18 + len(attrs)
    head = bytes((ACCESS_REQUEST, ident)) + length.to_bytes(2, "big") + authenticator
    blank = head + _attr(MESSAGE_AUTHENTICATOR, bytes(16)) + attrs
    return head + _attr(MESSAGE_AUTHENTICATOR, hmac_md5(secret, blank)) + attrs


def parse_attrs(body):
    out = []
    i = 0
    while i < len(body):
        if i + 2 > len(body) or body[i + 1] < 2 or i + body[i + 1] > len(body):
            raise RadiusError("attribute at offset " + str(20 + i) + " overruns the packet")
        out.append((body[i], bytes(body[i + 2:i + body[i + 1]]), 20 + i))
        i += body[i + 1]
    return out


def check_response(packet, secret, request_auth, ident):
    """(code, reply message) of an answer to our request, or RadiusError."""
    if len(packet) < 20:
        raise RadiusError("response shorter than 20 bytes")
    code, rid = packet[0], packet[1]
    length = int.from_bytes(packet[2:4], "big")
    if length < 20 or length > len(packet):
        raise RadiusError("response length field " + str(length) + " does not fit " + str(len(packet)) + " bytes")
    packet = bytes(packet[:length])
    if rid != ident:
        raise RadiusError("response id " + str(rid) + " does not match request " + str(ident))
    if code not in (ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE):
        raise RadiusError("unexpected response code " + str(code))
    expect = _md5(packet[:4] + request_auth + packet[20:] + secret)
    if not platform.constant_time_equal(expect, packet[4:20]):
        raise RadiusError("response authenticator mismatch (wrong shared secret?)")
    attrs = parse_attrs(packet[20:])
    msg = b""
    mac_at = None
    for kind, value, off in attrs:
        if kind == MESSAGE_AUTHENTICATOR:
            if len(value) != 16:
                raise RadiusError("Message-Authenticator of " + str(len(value)) + " bytes")
            mac_at = off
        elif kind == REPLY_MESSAGE:
            msg += value
    if mac_at is None:
        raise RadiusError("response has no Message-Authenticator")
    blank = packet[:4] + request_auth + packet[20:mac_at + 2] + bytes(16) + packet[mac_at + 18:]
    if not platform.constant_time_equal(hmac_md5(secret, blank), packet[mac_at + 2:mac_at + 18]):
        raise RadiusError("Message-Authenticator mismatch")
    return code, msg.decode()
