"""The device's MQTT client over TLS (ssl= pass-through), on both runtimes,
against a broker deployed by `capshard broker`: it verifies the broker with
the deployment CA, logs in with its own credentials, and a wrong CA or a
wrong password never gets a session."""

from capshard.deploy_broker import make_certificates


def test_device_client_speaks_tls_to_the_deployed_broker(fw, deployed_broker, tmp_path):
    dep = deployed_broker
    dep.add_device("tls-1")
    (tmp_path / "ca.der").write_bytes(dep.ca_der())
    other = tmp_path / "other"
    other.mkdir()
    make_certificates(str(other), ["127.0.0.1"])  # a CA the broker's certificate does not chain to
    cases = [["good", "ca.der", dep.device_password("tls-1")],
             ["wrong-password", "ca.der", "nope"],
             ["wrong-ca", "other/ca.crt", dep.device_password("tls-1")]]
    code = f"""
import asyncio, json
from capdev import config
from capdev.mqtt.client import MqttClient
out = {{}}
async def attempt(name, ca, password):
    ctx = config.ssl_context({{"broker": {{"host": "127.0.0.1", "port": {dep.port}, "tls": True,
                                         "ca_file": ca}}}}, {str(tmp_path)!r})
    c = MqttClient("127.0.0.1", {dep.port}, "tls-1", user="tls-1", password=password, ssl=ctx,
                   connect_timeout_ms=3000)
    try:
        await c.connect(timeout_ms=4000 if name == "good" else 1500)
        await c.subscribe("capshard/v1/dev/tls-1/inst", 1)
        pid = await c.publish("capshard/v1/dev/tls-1/birth", b"hello", 1)
        out[name] = "acked" if await c.wait_acked(pid, 4000) else "not acked"
    except Exception as e:
        out[name] = "refused: " + str(c.last_error)
    await c.disconnect()
async def main():
    for name, ca, pw in {cases!r}:
        await attempt(name, ca, pw)
asyncio.run(main())
print(json.dumps(out))
"""
    got = fw.run_json(code, heap_kb=1024, timeout=60)
    assert got["good"] == "acked", got
    assert got["wrong-password"].startswith("refused") and "not authorized" in got["wrong-password"], got
    assert got["wrong-ca"].startswith("refused") and "certificate" in got["wrong-ca"].lower(), got
