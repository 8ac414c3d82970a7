# Firmware-side peer for tests/integration/test_mqtt_client.py.
# Runs capdev.mqtt.MqttClient under MicroPython or CPython, takes commands as
# JSON on an MQTT control topic and reports events as JSON lines on stdout.
# argv[1]: path of a JSON config file (this MicroPython unix build aborts with
# "uncaught NLR" on any argv element of 256 characters or more):
#   {"host","port","id","ctl","keepalive","subs":[[t,q]], "will":[t,p,q,r] or null,
#    "client": {extra MqttClient keyword arguments}}
import asyncio
import json
import sys

from capdev.mqtt import MqttClient

with open(sys.argv[1]) as f:
    cfg = json.loads(f.read())
client = None
done = asyncio.Event()
tasks = []  # keep references to every task


def emit(obj):
    print(json.dumps(obj))


def stats():
    d = dict(client.counters)
    d["ev"] = "stats"
    d["pending"] = client.pending()
    d["connected"] = client.connected
    return d


async def on_connect(session_present):
    n = client.counters["connects"]
    emit({"ev": "connected", "n": n, "sp": session_present})
    if n > 1:
        # SUBACKs come back in order: once this one is in, every resubscription is active.
        granted = await client.subscribe(cfg["ctl"], 1)
        emit({"ev": "resynced", "n": n, "granted": granted})


async def on_message(topic, payload, retain):
    if topic == cfg["ctl"]:
        tasks.append(asyncio.create_task(command(json.loads(payload))))
        return
    emit({"ev": "msg", "topic": topic, "payload": payload.decode(), "retain": retain})
    if payload == b"raise":
        raise ValueError("handler failed on purpose")


async def command(cmd):
    op = cmd["op"]
    emit({"ev": "cmd", "op": op})
    if op in ("pub", "pub_when_down", "pub_after_ms"):
        if op == "pub_when_down":
            while client.connected:
                await asyncio.sleep(0.01)
        elif op == "pub_after_ms":
            await asyncio.sleep(cmd["ms"] / 1000)
        qos = cmd.get("qos", 0)
        pid = await client.publish(cmd["topic"], cmd["payload"], qos, cmd.get("retain", False))
        emit({"ev": "published", "pid": pid, "connected": client.connected,
              "pending": client.pending()})
        if qos:
            ok = await client.wait_acked(pid, 20000)
            emit({"ev": "acked", "pid": pid, "ok": ok})
    elif op == "sub":
        granted = await client.subscribe(cmd["topic"], cmd.get("qos", 0))
        emit({"ev": "subscribed", "topic": cmd["topic"], "granted": granted})
    elif op == "unsub":
        await client.unsubscribe(cmd["topic"])
        emit({"ev": "unsubscribed", "topic": cmd["topic"]})
    elif op == "stats":
        emit(stats())
    elif op == "quit":
        await client.disconnect()
        emit({"ev": "bye"})
        done.set()


async def watch():
    # Report each loss of the connection, with the client's reason.
    was = True
    while True:
        if was and not client.connected:
            emit({"ev": "down", "reason": client.last_error})
        was = client.connected
        await asyncio.sleep(0.01)


async def main():
    global client
    will = cfg.get("will")
    client = MqttClient(cfg["host"], cfg["port"], cfg["id"], keepalive=cfg.get("keepalive", 30),
                        will=tuple(will) if will else None, on_message=on_message,
                        on_connect=on_connect, **cfg.get("client", {}))
    for topic, qos in cfg.get("subs", []):
        await client.subscribe(topic, qos)  # offline: sent when the connection comes up
    await client.connect(5000)
    granted = await client.subscribe(cfg["ctl"], 1)
    tasks.append(asyncio.create_task(watch()))
    emit({"ev": "ready", "granted": granted})
    await done.wait()


asyncio.run(main())
