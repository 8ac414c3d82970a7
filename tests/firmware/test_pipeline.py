"""The device's instruction pipeline, on both runtimes, fed instructions signed
by the provider's side (pycose): what it accepts, and why it rejects the rest."""

import json

from capshard import wire
from capshard.service.policy import MINIMAL_BASELINE

KEY = bytes(range(32))
KID = b"dev-1#1"

PIPELINE_SCRIPT = """
import json, sys
from capdev import platform
from capdev.cmm.store import DeviceStore
from capdev.cmm.pipeline import InstructionPipeline, Rejection
KEY = platform.unhexlify('{key}')
store = DeviceStore('{state}').load()
pipe = InstructionPipeline('dev-1', lambda kid: KEY if kid == b'{kid}' else None, store)
out = []
for line in {cases}:
    raw = platform.unhexlify(line)
    try:
        verdict, value = pipe.receive(raw)
    except Rejection as r:
        out.append(['rejected', r.kind, r.reason])
        continue
    if verdict == 'duplicate':
        out.append(['duplicate', value['id'], value['results']])
        continue
    ack = pipe.commit(value, [{{'shard': op['shard'], 'op': op['op'], 'code': 'activated', 'reason': ''}} for op in value['ops']])
    out.append(['applied', ack['id'], ack['results']])
print(json.dumps(out))
"""


def instruction(seq, iat=1_000_000, ttl=60, dev="dev-1", ops=None, iid=None, key=KEY, kid=KID):
    body = wire.make_instruction(dev, seq, ops if ops is not None else MINIMAL_BASELINE, True,
                                 iat, ttl, instruction_id=iid or f"i{seq}")
    return wire.sign_instruction(body, key, kid)


def run_pipeline(fw, tmp_path, messages):
    code = PIPELINE_SCRIPT.format(key=KEY.hex(), kid=KID.decode(), state=tmp_path / "state.json",
                                  cases=json.dumps([m.hex() for m in messages]))
    return fw.run_json(code)


def test_accepts_then_rejects_each_kind_of_bad_instruction(fw, tmp_path):
    first = instruction(1)
    tampered = bytearray(instruction(2))
    tampered[-40] ^= 1  # inside the payload
    bad_shard = dict(MINIMAL_BASELINE[0], shard="../../etc")
    results = run_pipeline(fw, tmp_path, [
        first,
        first,                                   # redelivery: same ack, not applied twice
        instruction(1, iid="other"),             # replayed sequence number
        instruction(2, key=b"\x01" * 32),        # forged: wrong key
        instruction(2, kid=b"someone#1"),        # unknown key id
        bytes(tampered),                         # tampered payload
        first[:-5],                              # truncated
        instruction(2, dev="dev-2"),             # addressed to another device
        instruction(2, ops=[bad_shard]),         # path characters in a shard id
        instruction(2, iat=1_000_000 - 3600),    # issued an hour before what we have seen
        b"\x00" * 5000,                          # over the size cap
        instruction(2, iat=1_000_010),           # a good one still goes through
    ])
    kinds = [r[0] if r[0] != "rejected" else r[1] for r in results]
    assert kinds == ["applied", "duplicate", "replay", "auth", "auth", "auth", "auth",
                     "misaddressed", "schema", "expired", "oversize", "applied"]
    assert results[1][2] == results[0][2]  # the same ack for the same id
    assert "unknown key id" in results[4][2]
    assert "invalid shard id" in results[8][2]


def test_sequence_and_recent_ids_survive_a_restart(fw, tmp_path):
    assert run_pipeline(fw, tmp_path, [instruction(5)])[0][0] == "applied"
    # A new process (a reboot) reads the persisted state.
    again = run_pipeline(fw, tmp_path, [instruction(5), instruction(4, iid="older"), instruction(6)])
    assert [r[0] if r[0] != "rejected" else r[1] for r in again] == ["duplicate", "replay", "applied"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["last_seq"] == 6 and [i for i, _ in state["recent"]] == ["i5", "i6"]
