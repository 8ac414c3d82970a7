"""The provider service: MQTT I/O (paho-mqtt) around the fleet store, and the
reconciler that drives every device toward its desired profile.

Inbound handlers only record what arrived and mark work on the device
(sync / re-plan / check); a worker thread takes due work, rate-limited, and
sends instructions. So a reconnect storm after a broker restart becomes a
spread-out, bounded queue of full-state syncs instead of a burst.

- birth: the device gets its full desired state (never trust it saw earlier
  messages); a new device gets its first plan.
- qos report: re-plan when the needs changed enough.
- ack / state: close the instruction; if the device does not run what we
  want and nothing is in flight, re-send the full state once per version.
- unacked instructions are retried (same id: the device de-duplicates) with
  backoff until their TTL, then TIMED_OUT.
Anything it cannot accept is logged with the reason, counted, and dropped.

Throughput: paho's thread only queues inbound messages; an inbox thread
records all that are waiting in one store transaction (group commit) and
acknowledges them to the broker after the commit. The reconciler takes due
work in one transaction, plans with the store free, then writes a chunk of
devices' instructions in one transaction before publishing them.
"""

import collections
import dataclasses
import logging
import random
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .. import wire
from .fleet import DeviceRecord, Fleet, profiles_match
from .link import BrokerLink
from .metrics import Metrics
from .policy import PolicyError, StaticPolicy
from .reconcile import ReconcileOptions, TokenBucket, backoff, full_state_ops, needs_changed
from .store import (SUCCEEDED, TIMED_OUT, WORK_CHECK, WORK_REPLAN, WORK_SYNC, StaleWrite,
                    StoreError, StoreUnavailable)

log = logging.getLogger("capshard.service")
SHARED_SUB, STATE_SUB = 1, 2   # MQTT 5 subscription identifiers (shared group mode)
INBOX_BATCH = 500       # messages recorded in one transaction at most
WORK_BATCH = 200        # devices' work taken in one transaction at most
CHUNK_PLAN_S = 0.005    # plan at most this long before writing and publishing a chunk (latency)


@dataclasses.dataclass
class _Job:
    """One device's work, decided with the store free, written in a chunk."""
    rec: DeviceRecord
    kinds: int
    wait: bool = False          # an instruction is in flight: come back later
    decision: object = None     # a changed plan to write (against rec.desired_version)
    repair: bool = False        # a drift re-send (marks the version repaired)
    ops: list = None
    full: bool = False
    inst: dict = None


class ProviderService:
    def __init__(self, host, port, keystore, desired_for=None, fleet=None,
                 client_id="capshard-provider", username=None, password=None, *,
                 policy=None, options=None, metrics=None, share_group=None, brokers=None):
        """``policy`` decides profiles (AllocatorPolicy for the real thing);
        ``desired_for(device_id, birth) -> list of op dicts`` is the short form
        of a StaticPolicy. ``fleet`` defaults to an in-memory SQLite store.
        ``brokers`` ([(host, port)], default [(host, port)]): the nodes of a
        broker cluster, tried in order at start until one takes us, and in
        turn whenever the connection drops (link.BrokerLink)."""
        if policy is None:
            if desired_for is None:
                raise ValueError("ProviderService needs a policy or a desired_for function")
            policy = StaticPolicy(desired_for)
        self.keystore = keystore
        self.policy = policy
        self.fleet = fleet or Fleet()
        self.store = self.fleet.store
        self.opts = options or ReconcileOptions()
        self.metrics = metrics or Metrics()
        self.share_group = share_group
        # manual_ack: a message is acknowledged to the broker once what it says is committed
        # reconnect_on_failure=False: the link reconnects, to the next node (link.py).
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if share_group else mqtt.MQTTv311, manual_ack=True,
                                  reconnect_on_failure=False)
        self.link = BrokerLink(self.client, brokers or [(host, port)])
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._worker = None
        self._inbox = collections.deque()
        self._inbox_wake = threading.Event()
        self._inbox_thread = None
        # Per thread (the inbox and the reconciler batch at the same time):
        # inside a batch, what to do once it committed (metrics, publishing).
        self._local = threading.local()
        self._bucket = TokenBucket(self.opts.rate_per_s, self.opts.burst)
        # Counted when scraped, not at every birth and state: a COUNT over the
        # fleet per message grows with the fleet.
        self.metrics.devices_online.set_function(self._count_online)
        self._online_seen = 0
        self._renew_asked = {}
        self._connects = 0
        self._reconnected_at = None
        self._resynced = {}  # device id -> the reconnect it was re-synced for
        self._children = {}  # (metric, label) -> its child (see _child)
        self.handlers = {
            "birth": self._on_birth,
            "ack": self._on_ack,
            "state": self._on_state,
            "qos": self._on_qos,
            "health": self._on_health,
        }

    # ---- lifecycle ------------------------------------------------------------
    @property
    def brokers(self):
        return self.link.nodes

    @property
    def host(self):
        return self.link.address[0]

    @property
    def port(self):
        return self.link.address[1]

    def start(self, timeout=10):
        self.link.start(timeout)
        self._stop.clear()
        self._inbox_thread = threading.Thread(target=self._inbox_loop, name="capshard-inbox", daemon=True)
        self._inbox_thread.start()
        self._worker = threading.Thread(target=self._work_loop, name="capshard-reconciler", daemon=True)
        self._worker.start()
        return self

    def stop(self):
        self._stop.set()
        self._wake.set()
        self._inbox_wake.set()
        for t in (self._worker, self._inbox_thread):
            if t is not None:
                t.join(5)
        self._worker = self._inbox_thread = None
        self.link.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the provider: %s", reason_code)
            return
        # Instructions are small writes that must leave now: without this,
        # Nagle's algorithm holds one back until the broker's delayed ACK (~40 ms).
        try:
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass  # not a TCP socket (a test double, a websocket transport)
        self._subscribe(client)   # at every connect: the broker keeps no session for us across one
        self._connects += 1
        if self._connects > 1:
            # We were away: births and acks sent meanwhile are lost. Every device
            # seen online again (its retained state) gets its full state anew.
            self._reconnected_at = time.time()
            log.warning("provider reconnected to the broker (%s:%s): re-syncing devices as they show up",
                        self.host, self.port)
        self.link.accepted()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.link.dropped()

    def _subscribe(self, client):
        """One filter per kind a device sends (wire.DEVICE_KINDS, what
        self.handlers takes), not a wildcard over the device topics: that would
        bring every instruction we publish back to us, one more message to
        receive and ack per report for nothing. Other kinds under the device
        tree go unseen; the deployed broker ACL lets devices publish no others.
        Several providers sharing a fleet split the messages with shared
        subscriptions."""
        if self.share_group:
            client.subscribe([(wire.subscription(kind, self.share_group), 1) for kind in wire.DEVICE_KINDS],
                             properties=_sub_id(SHARED_SUB))
            # Each of us reads retained states here (MQTT 5 leaves delivering
            # them to shared subscribers to the server; mosquitto does, and
            # _duplicate drops that copy); live ones count once, via the group.
            client.subscribe(wire.subscription("state"), qos=1, properties=_sub_id(STATE_SUB))
        else:
            client.subscribe([(wire.subscription(kind), 1) for kind in wire.DEVICE_KINDS])

    # ---- inbound --------------------------------------------------------------
    def _on_message(self, client, userdata, message):
        # paho's network thread: queue only, so it keeps reading while the inbox records
        self._inbox.append(message)
        self._inbox_wake.set()

    def _inbox_loop(self):
        away_s = 0   # how long we last waited for an unreachable store
        while True:
            self._inbox_wake.wait(away_s or 0.5)
            self._inbox_wake.clear()
            while self._inbox:   # at stop too: what arrived is recorded before we go
                batch = []
                while self._inbox and len(batch) < INBOX_BATCH:
                    batch.append(self._inbox.popleft())
                # By device (stable: each device's messages keep their order), so
                # providers sharing a database take row locks in one order.
                batch.sort(key=lambda m: m.topic.rsplit("/", 1)[0])
                try:
                    held = self.handle_messages(batch)
                except Exception:  # keep the inbox going whatever one batch did
                    log.exception("recording a batch of %d messages failed", len(batch))
                    # Still acknowledge them: unacknowledged QoS 1 messages hold
                    # the broker's in-flight window, and a full one stops delivery.
                    self._ack(batch)
                    held = []
                if held:
                    # The store is away: keep them, unacknowledged, and try again
                    # (1 s doubling to 10 s). Nothing is lost, and once the
                    # broker's in-flight window is full it holds back the rest.
                    self._inbox.extendleft(reversed(held))
                    if not away_s:
                        log.error("fleet store unreachable: holding %d messages until it is back", len(self._inbox))
                    away_s = min(away_s * 2 or 1, 10)
                    break
                if away_s:
                    log.warning("fleet store reachable again: recording the held messages")
                    away_s = 0
            if self._stop.is_set():
                return

    def handle_messages(self, messages):
        """Record these messages in one transaction, then acknowledge them to
        the broker. If the transaction fails, each is recorded on its own (one
        bad message costs only itself). Returns the messages not recorded
        because the store cannot be reached (not acknowledged: hand them in
        again later); empty when all were taken."""
        post = self._post = []
        held = []
        try:
            with self.store.batch():
                device = None
                for m in messages:
                    this = m.topic.rsplit("/", 1)[0]
                    if this != device:
                        self.store.flush_work()   # the previous device's, before this one's locks
                        device = this
                    self._handle(m)
        except StoreUnavailable:
            post.clear()
            held = messages
        except StoreError as e:
            log.warning("batch of %d messages rolled back (%s): recording them one by one", len(messages), e)
            post.clear()
            for i, m in enumerate(messages):
                mine = self._post = []
                try:
                    with self.store.batch():
                        self._handle(m)
                except StoreUnavailable:
                    held = messages[i:]
                    break
                except StoreError as e1:
                    log.error("message on %s dropped: %s", m.topic, e1)
                    try:
                        self.fleet.record_error(f"message on {m.topic} dropped: {e1}")
                    except StoreError:
                        pass  # the store is away
                    continue
                post.extend(mine)
        finally:
            self._post = None
        for fn in post:
            fn()
        done = messages[:len(messages) - len(held)]
        if done:
            self._ack(done)
            self.fleet.notify()
            self._wake.set()
        return held

    def _ack(self, messages):
        for m in messages:
            if getattr(m, "qos", 0) == 1:
                try:
                    self.client.ack(m.mid, 1)
                except Exception:  # the connection went: the broker resends after a reconnect
                    log.debug("ack of %s not sent", m.topic)

    @property
    def _post(self):
        return getattr(self._local, "post", None)

    @_post.setter
    def _post(self, value):
        self._local.post = value

    def _after(self, fn):
        """Run fn once this thread's batch committed (a rolled-back message
        must not count in the metrics, nor publish what was not recorded)."""
        post = self._post
        if post is None:
            fn()
        else:
            post.append(fn)

    def _duplicate(self, message):
        """In a share group, a live state reaches every provider through the
        plain state subscription and one of them through the group: only
        that one records it (the others would repeat its writes and checks).
        A retained state is read through the plain subscription only
        (mosquitto also hands it to a new shared subscriber)."""
        if not self.share_group:
            return False
        ids = getattr(getattr(message, "properties", None), "SubscriptionIdentifier", None)
        if not ids:
            return False
        return (STATE_SUB not in ids) if message.retain else (SHARED_SUB not in ids)

    def _handle(self, message):
        if self._duplicate(message):
            return
        try:
            device_id, kind = wire.split_topic(message.topic)
            msg = wire.decode(message.payload)
            if msg.get("dev") != device_id:
                raise wire.WireError(f"device id {msg.get('dev')!r} does not match topic")
            self.handlers[kind](device_id, msg)
        except wire.WireError as e:
            text = f"rejected message on {message.topic}: {e}"
            log.warning(text)
            self._after(self.metrics.rejected_messages.inc)
            self.fleet.record_error(text)
        except StoreError:
            raise  # the batch is rolled back and its messages recorded one by one
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
        self._after(self._child(self.metrics.reports, "birth").inc)
        # Spread the syncs of a reconnect storm; the rate limiter bounds them.
        self._request(device_id, WORK_SYNC, random.uniform(0, self.opts.birth_jitter_s))
        self._online_changed()

    def _on_ack(self, device_id, ack):
        state, before = self.fleet.record_ack(device_id, ack)
        if before is not None:
            self._after(self._child(self.metrics.instructions, state).inc)
            for r in ack.get("results") or []:
                if r.get("code") == "activated":
                    self._after(self._child(self.metrics.activations, str(r.get("shard", "?"))).inc)
        if state != SUCCEEDED:
            log.warning("device %s: instruction %s %s: %s", device_id, ack.get("id"), state,
                        ack.get("reason") or ack.get("results"))
        self._request(device_id, WORK_CHECK, self.opts.check_delay_s)

    def _on_state(self, device_id, state):
        online, birth = self.fleet.record_state_birth(device_id, state)
        if online:
            born, born_at = birth if birth is not None else self.store.birth_of(device_id)
            if not born and device_id in self.keystore:
                # Online since before we started: its birth went by unseen. One
                # request in flight is enough (retried until its TTL), also when
                # several providers read the same retained state.
                if not self.store.with_open_unsuperseded([device_id]):
                    self.request_rebirth(device_id)
                return
            if self._reconnected_at and (born_at or 0) < self._reconnected_at \
                    and device_id in self.keystore and self._resynced.get(device_id) != self._reconnected_at:
                # Once per reconnect: the sync's own ack and state must not ask for another.
                self._resynced[device_id] = self._reconnected_at
                self._request(device_id, WORK_SYNC, random.uniform(0, self.opts.birth_jitter_s))
            else:
                self._request(device_id, WORK_CHECK, self.opts.check_delay_s)
        self._online_changed()

    def _on_qos(self, device_id, report):
        if not isinstance(report.get("classes"), dict):
            raise wire.WireError(f"qos report from {device_id}: field 'classes' missing or wrong type")
        old = self.fleet.record_needs(device_id, report)
        self._after(self._child(self.metrics.reports, "qos").inc)
        if needs_changed(old, report, self.opts.bw_change):
            self._request(device_id, WORK_REPLAN, self.opts.replan_delay_s)

    def _on_health(self, device_id, health):
        self.fleet.record_health(device_id, health)
        self._after(self._child(self.metrics.reports, "health").inc)
        for ev in health.get("events") or []:
            if isinstance(ev, dict) and ev.get("ev") == "failover":
                self._after(self._child(self.metrics.failovers, str(ev.get("shard"))).inc)
                self.fleet.event(device_id, "failover", f"failover of {ev.get('shard')}: {ev.get('reason', '')}")

    def _child(self, metric, label):
        """metric.labels(label), remembered: labels() takes a lock and builds
        its key on every call, several times per report."""
        child = self._children.get((metric, label))
        if child is None:
            child = self._children[(metric, label)] = metric.labels(label)
        return child

    def _online_changed(self):
        pass  # devices_online is counted when scraped (see _count_online)

    def _count_online(self):
        try:
            self._online_seen = self.store.count_online()
        except StoreError:
            pass  # the store is away: show the last count
        return self._online_seen

    def _request(self, device_id, kinds, delay):
        self.store.request_work(device_id, kinds, time.time() + delay)
        self._wake.set()

    # ---- operator actions -----------------------------------------------------
    def set_desired(self, device_id, ops, expected_version=None, expires_at=None, why="set by operator"):
        """Make ``ops`` the device's desired profile. With ``expected_version``
        the write is refused (StaleWrite) if the profile changed since. The
        device gets it now if online, else at its next birth."""
        rec = self.fleet.device(device_id)
        version = rec.desired_version if rec else 0
        if expected_version is not None:
            version = expected_version
        profile = {op["shard"]: dict(op, op="activate") for op in ops}
        new = self.store.write_desired(device_id, profile, version, time.time(), expires_at, [why])
        self.fleet.event(device_id, "desired", f"desired v{new}: {why}")
        self._request(device_id, WORK_SYNC, 0)
        return new

    def replan(self, device_ids=None):
        """Re-plan these devices (default: every online one), spread over time."""
        ids = device_ids if device_ids is not None else \
            [d["device_id"] for d in self.store.list_devices() if d["online"]]
        spread = len(ids) / max(self.opts.rate_per_s, 1e-6)
        for device_id in ids:
            self._request(device_id, WORK_REPLAN, random.uniform(0, spread))
        return ids

    def assign_agreement(self, device_id, tier, by="service"):
        if tier not in self.policy.tiers():
            raise PolicyError(f"unknown tier {tier!r} (known: {', '.join(self.policy.tiers())})")
        if self.store.assign_agreement(device_id, tier, time.time(), by):
            self.fleet.event(device_id, "agreement", f"agreement: tier {tier}")
            self._request(device_id, WORK_REPLAN, 0)
            return True
        return False

    def set_policy(self, policy):
        """A new catalog or new agreements: every device is re-planned."""
        self.policy = policy
        return self.replan()

    # ---- the reconciler ---------------------------------------------------------
    def _work_loop(self):
        store_away = False
        while not self._stop.is_set():
            self._wake.wait(1.0 if store_away else self.opts.tick_s)
            self._wake.clear()
            try:
                self.reconcile_once()
                if store_away:
                    log.warning("reconciler: fleet store reachable again")
                store_away = False
            except StoreUnavailable as e:  # said once, tried again every second
                if not store_away:
                    log.error("reconciler: %s; waiting for it", e)
                store_away = True
            except Exception as e:  # keep reconciling; the store or broker may come back
                log.exception("reconciler pass failed")
                try:
                    self.fleet.record_error(f"reconciler: {e!r}")
                except StoreError:
                    pass

    def reconcile_once(self, now=None):
        now = time.time() if now is None else now
        self._retry_or_time_out(now)
        for device_id in self.store.expiring(now + self.opts.renew_before_s):
            rec = self.fleet.device(device_id)
            if rec and self._renew_asked.get(device_id) != rec.desired_expires_at:
                self._renew_asked[device_id] = rec.desired_expires_at
                self._request(device_id, WORK_REPLAN, 0)
        taken = time.monotonic()
        with self.store.batch():   # one transaction: claim the due work, read those devices
            # at most what the rate limiter allows now; the next tick brings more tokens
            claimed = self.store.claim_due_work(now, min(WORK_BATCH, self._bucket.available()))
            self._bucket.spend(len(claimed))
            ids = [w["device_id"] for w in claimed]
            rows = self.store.get_devices(ids, lean=True)
            in_flight = self.store.with_open_unsuperseded(ids)
        chunk, started = [], time.monotonic()
        for w in claimed:
            device_id = w["device_id"]
            try:
                job = self._prepare(rows.get(device_id), w["pending"], device_id in in_flight, now)
            except PolicyError as e:
                self.fleet.record_error(str(e))
                continue
            except Exception as e:  # one device's failure must not starve the others
                log.exception("reconciling %s failed", device_id)
                self.fleet.record_error(f"reconciling {device_id}: internal error {e!r}")
                continue
            if job is not None:
                chunk.append(job)
            if chunk and time.monotonic() - started >= CHUNK_PLAN_S:
                self._send_chunk(chunk, now, taken)
                chunk, started = [], time.monotonic()
        if chunk:
            self._send_chunk(chunk, now, taken)

    def _retry_or_time_out(self, now):
        for inst in self.store.due_retries(now):
            if now >= inst["deadline"]:
                why = f"no ack within {inst['ttl_s']} s after {inst['attempts']} attempt(s)"
                if inst["superseded_by"]:
                    why += f"; superseded by {inst['superseded_by']}"
                if self.store.finish(inst["id"], TIMED_OUT, now, why) is not None:
                    self._child(self.metrics.instructions, TIMED_OUT).inc()
                    self.fleet.event(inst["device_id"], "timeout", f"instruction {inst['id']} timed out: {why}")
                continue
            rec = self.fleet.device(inst["device_id"])
            if inst["superseded_by"] or not (rec and rec.online):
                # nothing to resend: the newer full state (or the next birth) covers it
                self.store.claim_retry(inst["id"], inst["next_attempt_at"], inst["deadline"])
                continue
            if not self._bucket.take():
                return
            nxt = min(inst["deadline"], now + backoff(inst["attempts"] + 1, self.opts))
            if self.store.claim_retry(inst["id"], inst["next_attempt_at"], nxt):
                self._publish(inst["device_id"], _instruction_of(inst))
                self.store.mark_sent(inst["id"], now, nxt)
                self._child(self.metrics.instructions_sent, "retry").inc()
                self.fleet.event(inst["device_id"], "retry",
                                 f"instruction {inst['id']} seq {inst['seq']} re-sent (attempt {inst['attempts'] + 1})")

    def _prepare(self, row, kinds, in_flight, now):
        """What to do for one device, from what was read: plans with the store
        free. Returns a _Job, or None when there is nothing to send."""
        if row is None:
            return None
        rec = DeviceRecord.from_row(row)
        if not rec.online or not rec.birth:
            return None  # its next birth brings it up to date (and says what board it is)
        sync = bool(kinds & WORK_SYNC)
        if not sync and in_flight:
            # one instruction in flight per device: plan against what it reports
            return _Job(rec, kinds, wait=True)
        job = _Job(rec, kinds)
        replan = bool(kinds & WORK_REPLAN) or rec.desired_version == 0 or \
            (rec.desired_expires_at is not None and rec.desired_expires_at <= now)
        desired, expires_at = rec.desired, rec.desired_expires_at
        if replan:
            decision = self.policy.decide(rec, rec.tier, now)
            if not (profiles_match(rec.desired, decision.profile) and decision.expires_at == rec.desired_expires_at
                    and rec.desired_version > 0):
                job.decision = decision
                desired, expires_at = decision.profile, decision.expires_at
        if sync:
            job.full = True
        elif job.decision is not None:
            job.full = not (job.decision.operations and not isinstance(self.policy, StaticPolicy))
            if not job.full:
                job.ops = job.decision.operations
        elif not profiles_match(rec.desired, rec.reported):
            # drift (a lost message, a failed op, a manual change): one full re-send per version
            if row["repaired_version"] == rec.desired_version:
                return None
            job.repair = job.full = True
        else:
            return None
        if job.full:
            job.ops = full_state_ops(desired, expires_at, now)
        return job

    def _send_chunk(self, jobs, now, taken):
        """Record these devices' plans and instructions in one transaction,
        publish them (each recorded before it leaves), then mark them sent."""
        post = self._post = []
        try:
            with self.store.batch():
                for job in jobs:
                    self.store.flush_work()   # the previous device's, before this one's locks
                    self._write_job(job, now)
        except StoreError as e:
            self._post = None
            log.warning("writing %d devices' instructions failed (%s): each is retried", len(jobs), e)
            for job in jobs:
                try:
                    self.store.request_work(job.rec.device_id, job.kinds, now + self.opts.in_flight_wait_s)
                except StoreError:
                    pass  # the store is away; the device's next message asks again
            self.fleet.record_error(f"reconciler: {e}")
            return
        finally:
            self._post = None
        for fn in post:
            fn()
        sent = [job for job in jobs if job.inst is not None]
        for job in sent:
            self._publish(job.rec.device_id, job.inst)
        done = time.time()
        with self.store.batch():
            # each its own jitter, so a chunk's retries do not line up
            self.store.mark_sent_many([(job.inst["id"], now + backoff(1, self.opts)) for job in sent], done)
            for job in sent:
                inst = job.inst
                self.fleet.event(job.rec.device_id, "instruction",
                                 f"instruction {inst['id']} seq {inst['seq']} sent "
                                 f"({'full state' if job.full else f'{len(job.ops)} op(s)'})")
        self.fleet.notify()
        for job in sent:
            self._child(self.metrics.instructions_sent, "full" if job.full else "delta").inc()
        latency = time.monotonic() - taken
        for _ in sent:
            self.metrics.decision_latency.observe(latency)

    def _write_job(self, job, now):
        """Inside the chunk's transaction: the desired profile (against the
        version read), the instruction (QUEUED), the events."""
        rec = job.rec
        device_id = rec.device_id
        if job.wait:
            self.store.request_work(device_id, job.kinds, now + self.opts.in_flight_wait_s)
            return
        decision = job.decision
        seq = None
        if decision is not None:
            try:
                # the new plan and the instruction's sequence number: one statement
                version, seq = self.store.write_desired_next_seq(device_id, decision.profile, rec.desired_version,
                                                                 now, decision.expires_at, decision.explanations)
            except StaleWrite:
                # another writer got there first: read again and decide again, next pass
                self._after(self.metrics.stale_writes.inc)
                self.store.request_work(device_id, job.kinds, now)
                return
            if decision.preempted:
                self._after(lambda n=len(decision.preempted): self.metrics.preemptions.inc(n))
                self.fleet.event(device_id, "preempt",
                                 "preempted " + ", ".join(sorted(decision.preempted)) + " to make room")
            why = "; ".join(decision.explanations[:3]) or "new plan"
            self.fleet.event(device_id, "desired", f"desired v{version}: {why}")
            rec = dataclasses.replace(rec, desired=decision.profile, desired_version=version,
                                      desired_expires_at=decision.expires_at)
        if job.repair:
            self.store.mark_repaired(device_id, rec.desired_version)
            self.fleet.event(device_id, "drift", f"reported profile differs from desired v{rec.desired_version}: "
                                                 "re-sending the full state")
        if seq is None:
            seq = self.store.next_seq(device_id)
        inst = wire.make_instruction(device_id, seq, job.ops, job.full, now, self.opts.ttl_s)
        # Retried like a sent one if this process dies before it is published.
        self.store.add_instruction(inst, rec.desired_version, rec.tier or self.policy.default_tier, now,
                                   now + self.opts.ttl_s, publish_by=now + backoff(1, self.opts))
        if job.full:
            self.store.supersede_open(device_id, inst["id"])
        job.inst = inst

    # ---- outbound -------------------------------------------------------------
    def _publish(self, device_id, instruction):
        kid, key = self.keystore.get(device_id)
        self.client.publish(wire.topic(device_id, wire.INSTRUCTION),
                            wire.sign_instruction(instruction, key, kid), qos=1)

    def request_rebirth(self, device_id):
        """Ask a device to publish its birth again: a signed instruction with
        no operations (its retained state told us its last sequence number)."""
        now = time.time()
        inst = wire.make_instruction(device_id, self.store.next_seq(device_id), [], False, now,
                                     self.opts.ttl_s, rebirth=True)
        self.store.add_instruction(inst, 0, None, now, now + self.opts.ttl_s, publish_by=now + backoff(1, self.opts))

        def send():  # once the instruction is committed (when asked from inside a batch)
            self._publish(device_id, inst)
            self.store.mark_sent(inst["id"], now, now + backoff(1, self.opts))
            self.fleet.event(device_id, "instruction", f"rebirth requested (instruction {inst['id']} seq {inst['seq']})")
        self._after(send)
        return inst

    def send_instruction(self, device_id, ops, full=False, ttl_s=None):
        """Send these operations now, outside the desired state (tests, tools).
        The reconciler treats what the device then reports as drift."""
        ttl_s = ttl_s or self.opts.ttl_s
        now = time.time()
        rec = self.fleet.device(device_id)
        inst = wire.make_instruction(device_id, self.store.next_seq(device_id), ops, full, now, ttl_s)
        self.store.add_instruction(inst, rec.desired_version if rec else 0, rec.tier if rec else None, now,
                                   now + ttl_s)
        self._publish(device_id, inst)
        self.store.mark_sent(inst["id"], now, now + backoff(1, self.opts))
        self._child(self.metrics.instructions_sent, "manual").inc()
        self.fleet.event(device_id, "instruction", f"instruction {inst['id']} seq {inst['seq']} sent")
        return inst


def _sub_id(n):
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = n
    return props


def _instruction_of(row):
    """The instruction exactly as first sent (same id, seq and iat)."""
    return {"v": wire.VERSION, "dev": row["device_id"], "id": row["id"], "seq": row["seq"], "iat": row["iat"],
            "ttl_s": row["ttl_s"], "full": bool(row["full_state"]), "ops": row["ops"]}

