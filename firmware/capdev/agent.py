# The device agent: connects to the broker, announces itself, turns verified
# instructions into the running profile, acks them and reports its state.
# Usage: micropython -m capdev.agent BOARD.json DEVICE.json STATE_DIR
import asyncio
import gc
import sys

import capdev
from capdev import cbor, config, log, platform, protocol
from capdev.cmm.pipeline import InstructionPipeline, Rejection
from capdev.cmm.store import DeviceStore
from capdev.mqtt.client import MqttClient

HEALTH_PERIOD_MS = 30000


class Agent:
    def __init__(self, board, ident, state_dir):
        self.board = board
        self.device_id = ident["device_id"]
        self._kid = ident["kid"].encode()
        self._key = ident["key_bytes"]
        self.broker = ident.get("broker") or board["broker"]
        self._user = ident.get("broker_user")
        self._password = ident.get("broker_password")
        self.store = DeviceStore(state_dir + "/cmm-state.json").load()
        if self.store.load_error:
            log.error(self.store.load_error)
        self.pipeline = InstructionPipeline(self.device_id, self._key_for, self.store)
        self.unknown_topics = 0
        self.client = None

    def _key_for(self, kid):
        return self._key if kid == self._kid else None

    def topic(self, kind):
        return protocol.topic(self.device_id, kind)

    # ---- messages the device sends -------------------------------------------
    def birth(self):
        return {
            "v": protocol.VERSION,
            "dev": self.device_id,
            "board": self.board["board"],
            "fw": capdev.VERSION,
            "runtime": platform.RUNTIME,
            "caps": self.board["capacities"],
            "shards": self.board["shards"],
            "last_seq": self.store.last_seq,
            "heap_free": platform.heap_free(),
            "heap_used": platform.heap_used(),
        }

    def state(self):
        return {
            "v": protocol.VERSION,
            "dev": self.device_id,
            "online": True,
            "seq": self.store.last_seq,
            "profile": self.store.profile,
        }

    async def send(self, kind, msg, retain=False):
        await self.client.publish(self.topic(kind), cbor.dumps(msg), 1, retain)

    # ---- applying operations ----------------------------------------------
    def apply(self, msg):
        """Record the operations into the profile. Returns per-op results."""
        profile = self.store.profile
        results = []
        if msg["full"]:
            wanted = {}
            for op in msg["ops"]:
                wanted[op["shard"]] = True
            for shard in list(profile):
                if shard not in wanted:
                    del profile[shard]
                    results.append(_result(shard, "deactivate", protocol.DEACTIVATED, "not in desired profile"))
        for op in msg["ops"]:
            kind, shard = op["op"], op["shard"]
            if kind == "deactivate":
                if profile.pop(shard, None) is None:
                    results.append(_result(shard, kind, protocol.DEACTIVATED, "was not active"))
                else:
                    results.append(_result(shard, kind, protocol.DEACTIVATED, ""))
            elif kind == "adjust" and shard not in profile:
                results.append(_result(shard, kind, protocol.REJECTED, "shard is not active"))
            else:
                profile[shard] = op
                code = protocol.ADJUSTED if kind == "adjust" else protocol.ACTIVATED
                results.append(_result(shard, kind, code, ""))
        return results

    # ---- MQTT callbacks ---------------------------------------------------
    async def on_connect(self, session_present):
        client = self.client
        await client.subscribe(self.topic(protocol.INSTRUCTION), 1)
        await self.send(protocol.BIRTH, self.birth())
        await self.send(protocol.STATE, self.state(), True)
        log.info("connected to " + self.broker["host"] + ":" + str(self.broker["port"])
                 + " as " + self.device_id)

    async def on_message(self, topic, payload, retain):
        parts = protocol.split_topic(topic)
        if parts is None or parts[0] != self.device_id or parts[1] != protocol.INSTRUCTION:
            self.unknown_topics += 1
            log.error("message on unexpected topic " + topic + " ignored")
            return
        try:
            verdict, value = self.pipeline.receive(payload)
        except Rejection as r:
            log.warn("instruction rejected: " + r.reason)
            await self.send(protocol.ACK, self.pipeline.reject_ack(r))
            return
        if verdict == "duplicate":
            log.info("duplicate instruction " + str(value["id"]) + ": re-sending its ack")
            await self.send(protocol.ACK, value)
            return
        results = self.apply(value)
        ack = self.pipeline.commit(value, results)
        log.info("applied instruction " + value["id"] + " seq " + str(value["seq"])
                 + ": " + str(len(results)) + " result(s)")
        await self.send(protocol.ACK, ack)
        await self.send(protocol.STATE, self.state(), True)

    async def run(self):
        will = (self.topic(protocol.STATE),
                cbor.dumps({"v": protocol.VERSION, "dev": self.device_id, "online": False}), 1, True)
        self.client = MqttClient(
            self.broker["host"], self.broker["port"], self.device_id,
            user=self._user, password=self._password,
            keepalive=self.board["broker"].get("keepalive_s", 30), will=will,
        )
        self.client.on_connect = self.on_connect
        self.client.on_message = self.on_message
        await self.client.connect()
        gc.collect()
        log.info("started: heap_used=" + str(platform.heap_used()) + " heap_free=" + str(platform.heap_free()))
        while True:
            await asyncio.sleep(HEALTH_PERIOD_MS / 1000)


def _result(shard, op, code, reason):
    return {"shard": shard, "op": op, "code": code, "reason": reason}


def main(argv):
    if len(argv) != 3:
        print("usage: capdev.agent BOARD.json DEVICE.json STATE_DIR")
        return 2
    try:
        board = config.load_board(argv[0])
        ident = config.load_identity(argv[1])
    except config.ConfigError as e:
        log.error("boot stopped: " + str(e))
        return 1
    asyncio.run(Agent(board, ident, argv[2]).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
