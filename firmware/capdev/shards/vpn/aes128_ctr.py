# vpn.cipher: AES-128-CTR, encrypt-then-MAC with HMAC-SHA256.
from capdev.shards.vpn import cipher, etm


class Shard(cipher.CipherShard):
    suite_id = etm.SUITE_AES128_CTR
