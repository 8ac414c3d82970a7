"""The provider's COSE_Mac0 (built with cbor2 and hmac) is byte for byte what
pycose makes, and pycose verifies it."""

from pycose.algorithms import HMAC256
from pycose.headers import KID, Algorithm
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage, Mac0Message

from capshard import wire


def pycose_sign(payload, key, kid):
    msg = Mac0Message(phdr={Algorithm: HMAC256}, uhdr={KID: kid}, payload=wire.encode(payload))
    msg.key = SymmetricKey(k=key)
    return msg.encode()


def test_signed_instruction_is_what_pycose_makes_and_verifies():
    key = bytes(range(32))
    ops = [{"op": "activate", "shard": "vpn-aes", "ver": "1.2.0", "cpu": 20, "mem_kb": 48, "bw_kbps": 6000,
            "prio": "high", "dur_s": 300, "alt": None, "slot": "vpn.cipher", "module": "capdev.shards.aes"}]
    for inst in (wire.make_instruction("gw-1", 7, ops, True, 1_700_000_000),
                 wire.make_instruction("gw-ü", 2 ** 40, [], False, 0, 5, rebirth=True),
                 wire.make_instruction("d" * 200, 1, ops * 20, False, 1_700_000_000.9)):
        for kid in (b"gw-1#1", b"k" * 300):
            mine = wire.sign_instruction(inst, key, kid)
            assert mine == pycose_sign(inst, key, kid)
            msg = CoseMessage.decode(mine)
            msg.key = SymmetricKey(k=key)
            assert msg.verify_tag()
            assert wire.decode(msg.payload) == inst
