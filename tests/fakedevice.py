"""A device's MQTT side, by hand, for provider tests: publishes what the
test says and keeps the instructions it receives (decoded)."""

import cbor2
import paho.mqtt.client as mqtt

from capshard import wire

CAPS = {"cpu": 100, "mem_kb": 300, "bw_kbps": 20000}


class FakeDevice:
    def __init__(self, broker, device_id):
        self.device_id = device_id
        self.instructions = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.on_message = lambda c, u, m: self.instructions.append(
            wire.decode(cbor2.loads(m.payload).value[2]))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(wire.topic(device_id, wire.INSTRUCTION), qos=1)
        self.client.loop_start()

    def send(self, kind, body, retain=False):
        msg = dict({"v": wire.VERSION, "dev": self.device_id}, **body)
        self.client.publish(wire.topic(self.device_id, kind), wire.encode(msg), qos=1,
                            retain=retain).wait_for_publish(5)

    def birth(self):
        self.send("birth", {"board": "bench", "fw": "t", "runtime": "cpython", "last_seq": 0, "caps": CAPS})

    def apply(self, inst):
        """Run ``inst`` as a device that applies every op: ack it, then
        publish the resulting state (retained). Returns the profile."""
        profile = {op["shard"]: op for op in inst["ops"]}
        self.send("ack", {"id": inst["id"], "seq": inst["seq"], "status": "applied", "reason": "",
                          "results": [{"shard": s, "op": "activate", "code": "activated", "reason": ""}
                                      for s in profile]})
        self.send("state", {"online": True, "seq": inst["seq"], "profile": profile, "shards": {}}, retain=True)
        return profile

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()
