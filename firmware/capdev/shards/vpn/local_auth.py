# vpn.auth: a local credential store. Passwords are kept as
# PBKDF2-HMAC-SHA256(password, per-user random salt, iterations); a login
# costs one PBKDF2 run whether the user exists or not, so timing does not
# tell which users exist.
import json

from capdev import platform
from capdev.shards import sdk
from capdev.shards.vpn import kdf

DEFAULT_ITERATIONS = 2000  # about 10 ms on the unix port; raise it on faster boards
SALT_LEN = 16
MAX_USERS = 64


class AuthError(Exception):
    """A credential store request that cannot be carried out; str() says why."""


class Shard(sdk.Shard):
    period_ms = 1000

    def start(self):
        self.users = {}  # name -> (salt, iterations, hash)
        self.accepted = 0
        self.rejected = 0
        self.path = None
        self._dummy = (platform.random_bytes(SALT_LEN), DEFAULT_ITERATIONS)

    def add_user(self, user, password, iterations=DEFAULT_ITERATIONS, salt=None):
        if not isinstance(user, str) or not user or len(user) > 64 or "\x00" in user:
            raise AuthError("user name must be 1..64 characters without NUL")
        if not isinstance(password, str) or not password:
            raise AuthError("password must be a non-empty string")
        if user not in self.users and len(self.users) >= MAX_USERS:
            raise AuthError("credential store is full (" + str(MAX_USERS) + " users)")
        salt = salt or platform.random_bytes(SALT_LEN)
        self.users[user] = (salt, iterations, kdf.pbkdf2_sha256(password.encode(), salt, iterations))

    def remove_user(self, user):
        return self.users.pop(user, None) is not None

    def verify(self, user, password):
        rec = self.users.get(user)
        salt, iterations = (rec[0], rec[1]) if rec else self._dummy
        got = kdf.pbkdf2_sha256(password.encode(), salt, iterations)
        ok = rec is not None and platform.constant_time_equal(got, rec[2])
        if ok:
            self.accepted += 1
        else:
            self.rejected += 1
        return ok

    # The tunnel asks this (True / False; never pending here).
    authorize = verify

    def dumps(self):
        out = {}
        for user in self.users:
            salt, iterations, h = self.users[user]
            out[user] = {"salt": platform.hexlify(salt), "iter": iterations, "hash": platform.hexlify(h)}
        return json.dumps(out)

    def loads(self, text):
        try:
            data = json.loads(text)
            users = {}
            for user in data:
                rec = data[user]
                users[user] = (platform.unhexlify(rec["salt"]), int(rec["iter"]), platform.unhexlify(rec["hash"]))
        except (ValueError, KeyError, TypeError) as e:
            raise AuthError("credential store is malformed: " + type(e).__name__ + " " + str(e))
        self.users = users

    def save(self, path):
        platform.atomic_write(path, self.dumps().encode())

    def load(self, path):
        data = platform.read_file(path)
        if data is None:
            raise AuthError("credential store " + path + " does not exist")
        self.loads(data.decode())

    def health(self):
        return {"ok": True, "users": len(self.users), "accepted": self.accepted, "rejected": self.rejected}
