"""vpn.auth shards under both runtimes: the PBKDF2 credential store, and the
RADIUS PAP client against a real FreeRADIUS (accept, reject, a lost request
answered on retry, timeout, wrong shared secret)."""

import hashlib
import json
import socket
import threading

from ports import free_udp_port


def test_local_store_hashes_with_per_user_salt_and_verifies(fw, tmp_path):
    path = str(tmp_path / f"users-{fw.runtime}.json")
    code = f"""
import json
from capdev.shards.vpn import local_auth
a = local_auth.Shard('auth'); a.configure({{}}); a.start()
a.add_user('alice', 'wonderland', 50)
a.add_user('bob', 'wonderland', 50)
out = {{'ok': a.verify('alice', 'wonderland'), 'wrong': a.verify('alice', 'Wonderland'),
        'nobody': a.verify('mallory', 'wonderland'), 'bob': a.verify('bob', 'wonderland')}}
errs = []
for args in (('', 'x'), ('carol', ''), ('a\\x00b', 'x')):
    try:
        a.add_user(*args)
    except local_auth.AuthError as e:
        errs.append(str(e))
out['errs'] = errs
a.save('{path}')
b = local_auth.Shard('auth2'); b.start(); b.load('{path}')
out['reloaded'] = [b.verify('bob', 'wonderland'), b.verify('bob', 'nope')]
try:
    b.loads('{{"alice": {{"salt": "zz"}}}}')
except local_auth.AuthError as e:
    out['bad_store'] = str(e)
out['health'] = a.health()
print(json.dumps(out))
"""
    r = fw.run_json(code, heap_kb=512)
    assert r["ok"] and r["bob"] and not r["wrong"] and not r["nobody"]
    assert len(r["errs"]) == 3 and "malformed" in r["bad_store"]
    assert r["reloaded"] == [True, False]
    assert r["health"] == {"ok": True, "users": 2, "accepted": 2, "rejected": 2}
    with open(path) as f:
        store = json.load(f)
    alice, bob = store["alice"], store["bob"]
    assert alice["salt"] != bob["salt"] and alice["hash"] != bob["hash"]  # same password, own salt
    assert "wonderland" not in json.dumps(store)
    for rec in (alice, bob):
        want = hashlib.pbkdf2_hmac("sha256", b"wonderland", bytes.fromhex(rec["salt"]), rec["iter"], 32)
        assert rec["hash"] == want.hex() and len(bytes.fromhex(rec["salt"])) == 16


class DropFirst:
    """A UDP relay to radiusd that loses the first request (so the client must retry)."""

    def __init__(self, target_port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", target_port)
        self.dropped = 0
        self._stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.settimeout(0.1)
        client = None
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(4096)
                if self.dropped == 0:
                    self.dropped = 1
                    continue
                client = addr
                up.sendto(data, self.target)
            except socket.timeout:
                pass
            try:
                answer, _ = up.recvfrom(4096)
                self.sock.sendto(answer, client)
            except socket.timeout:
                pass
        up.close()

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def test_radius_pap_client_against_freeradius(fw, radiusd):
    relay = DropFirst(radiusd.port)
    dead_port = free_udp_port()  # nothing listens there
    try:
        code = f"""
import json
from capdev.shards.vpn import radius_auth
r = radius_auth.Shard('radius'); r.configure({{}}); r.start()
out = {{}}
r.attach(('127.0.0.1', {radiusd.port}), '{radiusd.secret}', timeout_ms=400, retries=2)
out['pending'] = r.authorize('alice', 'wonderland')
out['accept'] = r.verify('alice', 'wonderland')
out['reject'] = r.verify('alice', 'not-her-password')
out['unknown'] = r.verify('mallory', 'x')
r.attach(('127.0.0.1', {relay.port}), '{radiusd.secret}', timeout_ms=300, retries=2)
out['retry'] = r.verify('bob', 'builder-42')
r.attach(('127.0.0.1', {dead_port}), '{radiusd.secret}', timeout_ms=100, retries=2)
out['timeout'] = r.verify('alice', 'wonderland')
r.attach(('127.0.0.1', {radiusd.port}), 'not-the-secret', timeout_ms=200, retries=1)
out['bad_secret'] = r.verify('alice', 'wonderland')
out['health'] = r.health()
print(json.dumps(out))
"""
        r = fw.run_json(code, heap_kb=512, timeout=60)
    finally:
        relay.close()
    log = radiusd.log()
    assert r["pending"] is None
    assert r["accept"]["result"] == "accept" and r["accept"]["reason"] == "welcome alice", log[-2000:]
    assert r["accept"]["tries"] == 1
    assert r["reject"]["result"] == "reject" and r["reject"]["reason"] == "denied"
    assert r["unknown"]["result"] == "reject"
    assert r["retry"] == {"user": "bob", "result": "accept", "reason": "welcome bob", "tries": 2}
    assert relay.dropped == 1
    assert r["timeout"]["result"] == "timeout" and r["timeout"]["tries"] == 3
    assert r["bad_secret"]["result"] == "timeout" and "shared secret" in r["bad_secret"]["reason"]
    assert "invalid Message-Authenticator" in log  # the server refused the wrongly signed request
    h = r["health"]
    assert (h["accept"], h["reject"], h["timeout"]) == (2, 2, 2) and h["bad_answers"] == 0
