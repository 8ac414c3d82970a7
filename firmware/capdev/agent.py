# The device agent: connects to the broker, announces itself, turns verified
# instructions into the running profile, acks them and reports its state.
# Usage: micropython -m capdev.agent BOARD.json DEVICE.json STATE_DIR
#
# Memory: the agent keeps only its hot path resident. Code used at boot
# (config, restoring the profile, building the monitor: startup.py) or now and then (checking an instruction, applying ops, failures,
# reports) is imported when needed and unloaded again by trim(); see
# docs/performance.md for the figures.
import asyncio
import gc
import sys

import capdev
from capdev import cbor, log, platform, protocol
from capdev.cmm.manager import ShardManager
from capdev.cmm.store import DeviceStore
from capdev.mqtt.client import MqttClient
from capdev.platform import const

# Private const()s: folded into the code on MicroPython, no RAM.
_HEALTH_PERIOD_MS = const(30000)
_EVENT_POLL_MS = const(1000)
_EVENTS_PER_MESSAGE = const(16)  # keeps a health message well under the size cap
_TRAFFIC_PUMP_MS = const(100)
_TRAFFIC_TICK_MS = const(1000)
# Imported on demand, unloaded by trim(): nothing resident may keep a
# reference to them (an instance, a class or a function of theirs). Module
# names separated by spaces, one string each (split when used): as tuples
# of strings they were ~0.8 KiB of heap objects on a board.
CHECKING = "capdev.cose capdev.crypto capdev.schema capdev.cbor_decode"  # verifying an instruction
APPLYING = "capdev.cmm.ops capdev.cmm.loader"  # applying ops, starting shards
COLD = (  # all of them: CHECKING, APPLYING and the rest
    "capdev.cose capdev.crypto capdev.schema capdev.cbor_decode capdev.cmm.ops capdev.cmm.loader"
    " capdev.cmm.pipeline capdev.cmm.leases capdev.cmm.reports capdev.rnma.dpi_names"
    " capdev.mqtt.session capdev.mqtt.connect capdev.startup")

# Log texts: line n of _TEXTS for text number n, with "%s" filled in by
# _text(). One string constant: as separate strings they were a heap object
# each on a board.
_T_UNEXPECTED_TOPIC = const(0)
_T_REJECTED = const(1)
_T_DUPLICATE = const(2)
_T_APPLIED = const(3)
_T_CONNECTED = const(4)
_T_STARTED = const(5)
_T_MONITOR_NOT_STARTED = const(6)
_T_MONITOR_FAILED = const(7)
_T_FALLBACK = const(8)
_T_USAGE = const(9)
_T_BOOT_STOPPED = const(10)
_TEXTS = (
    "message on unexpected topic %s ignored\n"
    "instruction rejected: %s\n"
    "duplicate instruction %s: re-sending its ack\n"
    "applied instruction %s seq %s: %s result(s)\n"
    "connected to %s:%s as %s\n"
    "started: heap_used=%s heap_free=%s\n"
    "traffic monitoring failed to start: %s: %s\n"
    "traffic monitoring failed, restarting in %s ms: %s: %s\n"
    "provider unreachable past the lease: back to the baseline profile\n"
    "usage: capdev.agent BOARD.json DEVICE.json STATE_DIR\n"
    "boot stopped: %s"
)


# One copy of this small helper per module that keeps a text table, on
# purpose: a shared module for it cost 2 KiB of steady heap (performance.md).
def _text(n, args=None):
    """Log text number ``n`` (a _T_ number), with ``args`` filled in."""
    text = _TEXTS.split("\n")[n]
    return text if args is None else text % args


class Agent:
    def __init__(self, board, ident, state_dir, ssl=None):
        """``ssl``: the TLS context for the broker link (config.ssl_context), or None."""
        from capdev import startup  # unloaded by the first trim()

        self.board = startup.running_board(board)
        self.ssl = ssl
        self.device_id = ident["device_id"]
        self._kid = ident["kid"].encode()
        self._key = ident["key_bytes"]
        self.broker = ident.get("broker") or board["broker"]
        self._user = ident.get("broker_user")
        self._password = ident.get("broker_password")
        self.store = DeviceStore(state_dir + "/cmm-state.json").load()
        if self.store.load_error:
            log.error(self.store.load_error)
        self.manager = ShardManager(board["capacities"], board["free_heap_floor_kb"])
        self.unknown_topics = 0
        self.client = None
        self.state_dir = state_dir
        self.heap_peak = None  # highest heap_used sampled (after collections)
        startup.restore(self)
        self.vpn = None
        if "vpn" in board:
            # The VPN data path binds the cipher, tunnel and auth shards
            # together after every instruction (see docs/shards.md).
            from capdev.shards.vpn.link import VpnLink
            self.vpn = VpnLink(self.manager, self._key, self.device_id, board["vpn"])

    def _record_profile(self):
        profile = {}
        for op in self.manager.active_ops():
            profile[op["shard"]] = op
        self.store.profile = profile

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
            "shards": self.shard_summary(),
            # Rejected instructions by kind (auth, replay, expired, ...) since boot.
            "rejected": self.store.rejected,
        }

    def shard_summary(self):
        # Not manager.report(): the full report, built only to take four
        # fields from it, was ~2 KiB of garbage per message.
        from capdev.cmm import reports  # cold: trim() unloads it

        return reports.summary(self.manager)

    def health(self, events):
        shards = self.shard_summary()
        self.trim()  # the heap figures below are the resident ones
        return {
            "v": protocol.VERSION,
            "dev": self.device_id,
            "t": platform.wall_time(),
            "events": events,
            "shards": shards,
            "heap_free": platform.heap_free(),
            "heap_used": self.heap_sample(),
            "heap_peak": self.heap_peak,
        }

    def trim(self, names=COLD):
        """Unload those of ``names`` (cold modules: a string like COLD) that
        are loaded; True if any was."""
        found = False
        for name in names.split():
            if name in sys.modules:
                capdev.unload(name)
                found = True
        if found:
            gc.collect()
        return found

    def heap_sample(self):
        """Heap in use after a collection; keeps the highest value seen."""
        used = platform.heap_used()
        if used is not None and (self.heap_peak is None or used > self.heap_peak):
            self.heap_peak = used
        return used

    async def send(self, kind, msg, retain=False, qos=1):
        await self.client.publish(self.topic(kind), cbor.dumps(msg), qos, retain)

    # ---- applying operations ----------------------------------------------
    def apply(self, msg, lent_b=0):
        """Hand the operations to the shard manager; returns per-op results.

        A full instruction is the whole desired profile: whatever runs and is
        not in it is deactivated, and its no-expiry ops become the baseline
        the device falls back to when leases lapse."""
        ops = msg["ops"]
        extra = []
        if msg["full"]:
            wanted = {}
            baseline = []
            for op in ops:
                wanted[op["shard"]] = True
                if op["op"] == "activate" and op["dur_s"] == 0:
                    baseline.append(op)
            for op in self.manager.active_ops():
                if op["shard"] not in wanted:
                    extra.append({"op": "deactivate", "shard": op["shard"]})
            self.manager.set_baseline(baseline)
            self.store.baseline = baseline
        lease = 0
        for op in ops:
            if op.get("dur_s", 0) > lease:
                lease = op["dur_s"]
        results = self.manager.apply(extra + ops, lease or None, lent_b)
        if self.vpn is not None:
            self.vpn.after_apply(results)  # re-binds the slots, notes it in the acks
        self._record_profile()
        return results

    # ---- MQTT callbacks ---------------------------------------------------
    async def on_connect(self, session_present):
        client = self.client
        # A fallback while offline stops shards after it recorded the profile:
        # report (and persist) what runs now, not what ran when the link went.
        self._record_profile()
        self.store.save()
        await client.subscribe(self.topic(protocol.INSTRUCTION), 1)
        await self.send(protocol.BIRTH, self.birth())
        await self.send(protocol.STATE, self.state(), True)
        self.trim()  # what connecting and reporting loaded
        log.info(_text(_T_CONNECTED, (self.broker["host"], self.broker["port"], self.device_id)))

    async def on_message(self, topic, payload, retain):
        parts = protocol.split_topic(topic)
        if parts is None or parts[0] != self.device_id or parts[1] != protocol.INSTRUCTION:
            self.unknown_topics += 1
            log.error(_text(_T_UNEXPECTED_TOPIC, topic))
            return
        self.trim()  # room for the checking code, then for applying
        before = platform.heap_used()
        from capdev.cmm.pipeline import InstructionPipeline, Rejection

        # Held only until the ack: lent, not spent (see ShardManager.apply).
        # The checking code's import, and the payload: the MQTT client holds
        # it until this returns.
        lent_b = platform.heap_used() - before + len(payload) if before is not None else 0

        pipeline = InstructionPipeline(self.device_id, self._key_for, self.store)
        try:
            verdict, value = pipeline.receive(payload)
        except Rejection as r:
            log.warn(_text(_T_REJECTED, r.reason))
            # A flood of rejections outruns the PUBACKs queued behind it on the
            # same connection: once the outbox is full, reject at QoS 0 rather
            # than raise (which dropped the ack). Nothing was applied either way.
            full = self.client.pending() >= self.client.max_outbox
            await self.send(protocol.ACK, pipeline.reject_ack(r), qos=0 if full else 1)
            return
        finally:
            self.trim(CHECKING)  # before applying loads its own code
        if verdict == "duplicate":
            log.info(_text(_T_DUPLICATE, value["id"]))
            await self.send(protocol.ACK, value)
            return
        results = self.apply(value, lent_b)
        self.trim(APPLYING)  # before the commit writes the state file
        ack = pipeline.commit(value, results)
        # Nothing below needs the pipeline's code: it goes before the ack and
        # the state are encoded (this frame's names would keep it loaded).
        pipeline = InstructionPipeline = Rejection = None
        self.trim()
        log.info(_text(_T_APPLIED, (value["id"], value["seq"], len(results))))
        await self.send(protocol.ACK, ack)
        await self.send(protocol.STATE, self.state(), True)
        if value.get("rebirth"):
            await self.send(protocol.BIRTH, self.birth())  # a provider that missed it asks
        self.heap_sample()

    async def run(self):
        rnma = None
        synthetic = "synthetic" in self.board["traffic_sources"]
        if synthetic:
            # Built before connecting: the flow table is one large block, most
            # easily found in a fresh heap, and importing the monitor then
            # does not overlap the first instruction's work.
            self.trim()
            try:
                rnma = _start_monitoring(self)
            except Exception as e:
                log.error(_text(_T_MONITOR_NOT_STARTED, (type(e).__name__, e)))
        will = (self.topic(protocol.STATE),
                cbor.dumps({"v": protocol.VERSION, "dev": self.device_id, "online": False}), 1, True)
        self.client = MqttClient(
            self.broker["host"], self.broker["port"], self.device_id,
            user=self._user, password=self._password,
            keepalive=self.board["broker"].get("keepalive_s", 30), will=will, ssl=self.ssl,
        )
        self.client.on_connect = self.on_connect
        self.client.on_message = self.on_message
        # Imported once now so its names are interned: the heap measured
        # around its import per instruction is then its code alone.
        __import__("capdev.cmm.pipeline")
        self.trim()
        await self.client.connect()
        shards_task = asyncio.create_task(self.manager.run())
        traffic_task = None
        if synthetic:
            traffic_task = asyncio.create_task(self.keep_monitoring(rnma))
        rnma = None
        self.trim()
        log.info(_text(_T_STARTED, (platform.heap_used(), platform.heap_free())))
        await self.watch(shards_task)

    async def watch(self, shards_task):
        """Publish health when shards change state (and every _HEALTH_PERIOD_MS);
        fall back to the baseline when the provider stays out of reach."""
        last_health = platform.ticks_ms()
        lost_since = None
        while not shards_task.done():
            await asyncio.sleep(_EVENT_POLL_MS / 1000)
            now = platform.ticks_ms()
            self.trim()
            self.heap_sample()
            if self.client.connected:
                lost_since = None
            else:
                if lost_since is None:
                    lost_since = now
                if self.manager.provider_lost_for(platform.ticks_diff(now, lost_since) // 1000):
                    log.warn(_text(_T_FALLBACK))
                    self._record_profile()
                    self.store.save()
            self.drill_faults()
            events = self.manager.health_events()
            if events or platform.ticks_diff(now, last_health) >= _HEALTH_PERIOD_MS:
                last_health = now
                await self.publish_health(events)

    def drill_faults(self):
        """Failover drills (capdev/drill.py): armed by STATE_DIR/faults.json."""
        raw = platform.read_file(self.state_dir + "/faults.json")
        if raw is not None:
            # Not unloaded again: a drilled shard keeps a function of it.
            from capdev import drill

            drill.arm(self.manager, raw)

    async def keep_monitoring(self, rnma=None):
        """A failure in monitoring must not take the device down: log it,
        wait, start again (instructions and shards carry on meanwhile).
        ``rnma``: (monitor, traffic) already built, or None."""
        delay_ms = 1000
        while True:
            try:
                if rnma is None:
                    rnma = _start_monitoring(self)
                monitor, traffic = rnma
                rnma = None
                await self.monitor_traffic(monitor, traffic)
            except Exception as e:
                log.error(_text(_T_MONITOR_FAILED, (delay_ms, type(e).__name__, e)))
            monitor = traffic = None
            gc.collect()
            await asyncio.sleep(delay_ms / 1000)
            delay_ms = min(delay_ms * 2, 60000)

    async def monitor_traffic(self, monitor, traffic):
        """Classify the traffic, and report needs to the provider when they change."""
        clock = 0  # ms since start, never wraps
        last = platform.ticks_ms()
        next_tick = _TRAFFIC_TICK_MS
        while True:
            await asyncio.sleep(_TRAFFIC_PUMP_MS / 1000)
            now = platform.ticks_ms()
            clock += platform.ticks_diff(now, last)
            last = now
            traffic.pump(monitor, clock)
            if clock >= next_tick:
                next_tick = clock + _TRAFFIC_TICK_MS
                needs = traffic.tick(monitor, clock)
                self.heap_sample()
                if needs is not None:  # queued by the client while offline
                    await self.send(protocol.QOS, needs)

    async def publish_health(self, events):
        for i in range(0, max(len(events), 1), _EVENTS_PER_MESSAGE):
            await self.send(protocol.HEALTH, self.health(events[i:i + _EVENTS_PER_MESSAGE]))
        if events:
            self._record_profile()
            await self.send(protocol.STATE, self.state(), True)
            self.trim()


def _start_monitoring(agent):
    # The import's name lives in this short frame, not in the long-lived
    # coroutines that call it, so trim() can free the module again.
    from capdev import startup

    return startup.start_monitoring(agent)


def main(argv):
    if len(argv) != 3:
        print(_text(_T_USAGE))
        return 2
    from capdev import startup  # unloaded by the agent's first trim()

    board, ident = startup.load_config(argv[0], argv[1])
    startup = None
    if board is None:
        log.error(_text(_T_BOOT_STOPPED, ident))
        return 1
    agent = Agent(board, ident, argv[2])
    board = ident = None  # this frame lives as long as the agent: keep only its copy
    asyncio.run(agent.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
