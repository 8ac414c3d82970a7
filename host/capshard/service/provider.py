"""The provider service: MQTT I/O on paho-mqtt around the fleet state.

It listens to every device topic, answers a birth with the device's full
desired profile (signed), and records acks and reported state. Anything it
cannot accept is logged with the reason, counted, and dropped; the service
keeps running.
"""

import logging
import threading
import time

import paho.mqtt.client as mqtt

from .. import wire
from .fleet import Fleet

log = logging.getLogger("capshard.service")


class ProviderService:
    def __init__(self, host, port, keystore, desired_for, fleet=None,
                 client_id="capshard-provider", username=None, password=None):
        """``desired_for(device_id, birth) -> list of op dicts`` is the policy
        that decides a device's profile at birth (the allocator in full)."""
        self.host, self.port = host, port
        self.keystore = keystore
        self.desired_for = desired_for
        self.fleet = fleet or Fleet()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._connected = threading.Event()
        self.handlers = {
            "birth": self._on_birth,
            "ack": self._on_ack,
            "state": self._on_state,
            "qos": self._on_qos,
            "health": self._on_health,
        }

    # ---- lifecycle ------------------------------------------------------------
    def start(self, timeout=10):
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise RuntimeError(f"provider could not connect to {self.host}:{self.port}")
        return self

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the provider: %s", reason_code)
            return
        # One wildcard over all device topics, so a message on a topic we do
        # not know is seen and reported instead of silently ignored.
        client.subscribe(wire.PREFIX + "#", qos=1)
        self._connected.set()

    # ---- inbound --------------------------------------------------------------
    def _on_message(self, client, userdata, message):
        if message.topic.endswith("/" + wire.INSTRUCTION):
            return  # our own instructions, seen through the wildcard
        try:
            device_id, kind = wire.split_topic(message.topic)
            msg = wire.decode(message.payload)
            if msg.get("dev") != device_id:
                raise wire.WireError(f"device id {msg.get('dev')!r} does not match topic")
            self.handlers[kind](device_id, msg)
        except wire.WireError as e:
            text = f"rejected message on {message.topic}: {e}"
            log.warning(text)
            self.fleet.record_error(text)
        except Exception as e:  # a bug in a handler must not stop the service
            log.exception("handler failed on %s", message.topic)
            self.fleet.record_error(f"internal error on {message.topic}: {e!r}")

    def _on_birth(self, device_id, birth):
        for name, kind in (("board", str), ("last_seq", int), ("caps", dict)):
            if not isinstance(birth.get(name), kind):
                raise wire.WireError(f"birth from {device_id}: field {name!r} missing or wrong type")
        if device_id not in self.keystore:
            raise wire.WireError(f"birth from unknown device {device_id!r}")
        self.fleet.record_birth(device_id, birth)
        ops = self.desired_for(device_id, birth)
        self.fleet.set_desired(device_id, {op["shard"]: op for op in ops})
        # Never trust that the device saw earlier messages: always the full profile.
        self.send_instruction(device_id, ops, full=True)

    def _on_ack(self, device_id, ack):
        state = self.fleet.record_ack(device_id, ack)
        if state != "SUCCEEDED":
            log.warning("device %s: instruction %s %s: %s", device_id, ack.get("id"), state,
                        ack.get("reason") or ack.get("results"))

    def _on_state(self, device_id, state):
        self.fleet.record_state(device_id, state)

    def _on_qos(self, device_id, report):
        self.fleet.record_needs(device_id, report)

    def _on_health(self, device_id, health):
        self.fleet.record_health(device_id, health)

    # ---- outbound -------------------------------------------------------------
    def send_instruction(self, device_id, ops, full=False, ttl_s=wire.DEFAULT_TTL_S):
        kid, key = self.keystore.get(device_id)
        instruction = wire.make_instruction(
            device_id, self.fleet.next_seq(device_id), ops, full, time.time(), ttl_s)
        self.fleet.record_sent(instruction)
        self.client.publish(wire.topic(device_id, wire.INSTRUCTION),
                            wire.sign_instruction(instruction, key, kid), qos=1)
        return instruction
