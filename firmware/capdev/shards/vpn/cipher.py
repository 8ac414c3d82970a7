# The cipher shards' common body: a vpn.cipher slot holder that seals and
# opens tunnel payloads with encrypt-then-MAC. aes128_ctr / aes256_ctr only
# choose the suite. The tunnel hands it per-direction session keys.
from capdev.shards import sdk
from capdev.shards.vpn import etm


class CipherShard(sdk.Shard):
    suite_id = etm.SUITE_INTEGRITY
    overhead = etm.TAG_LEN

    def start(self):
        self.sealed = 0
        self.opened = 0
        self.rejected = 0  # tags that did not verify
        self.refused = 0  # over the bandwidth share
        self.bytes = 0

    def name(self):
        return etm.SUITE_NAMES[self.suite_id]

    def _share(self, n):
        # bw_kbps 0 in the op means "no share reserved": not metered here.
        if self.bw is None or not self.budget.get("bw_kbps"):
            return True
        if self.bw.take(n):
            return True
        self.refused += 1
        return False

    def seal(self, suite, nonce, aad, plaintext):
        """Sealed bytes, or None when the bandwidth share is used up."""
        if not self._share(len(plaintext)):
            return None
        self.sealed += 1
        self.bytes += len(plaintext)
        return suite.seal(nonce, aad, plaintext)

    def open(self, suite, nonce, aad, sealed):
        """Plaintext, or None for a tag that does not verify (counted)."""
        try:
            out = suite.open(nonce, aad, sealed)
        except etm.AuthError:
            self.rejected += 1
            return None
        self.opened += 1
        self.bytes += len(out)
        return out

    def health(self):
        return {"ok": True, "suite": self.name(), "sealed": self.sealed, "opened": self.opened,
                "rejected": self.rejected, "refused": self.refused}
