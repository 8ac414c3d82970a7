# Portable MQTT 3.1.1 client: packets.py is the pure codec, client.py the
# asyncio client, backoff.py the reconnect delays.
# The client (and asyncio) is imported only when asked for, so code that
# needs just the codec does not pay for it on a small heap.
from capdev.mqtt.packets import MqttProtocolError


def __getattr__(name):
    if name in ("MqttClient", "MqttError"):
        import capdev.mqtt.client
        import sys
        return getattr(sys.modules["capdev.mqtt.client"], name)
    raise AttributeError(name)
