# vpn.cipher: AES-256-CTR, encrypt-then-MAC with HMAC-SHA256.
from capdev.shards.vpn import cipher, etm


class Shard(cipher.CipherShard):
    suite_id = etm.SUITE_AES256_CTR
