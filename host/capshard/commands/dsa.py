"""`capshard dsa run CONFIG`: run the Dynamic Shard Allocator service: MQTT,
the fleet store, reconciliation, metrics. It re-plans every device when the
catalog or agreements files change, and stops cleanly on SIGINT/SIGTERM."""

import logging
import os
import signal
import sys
import threading
import time

from ..catalog import DEFAULT_AGREEMENTS, DEFAULT_CATALOG, InputError
from ..keys import Keystore
from ..service import config as service_config
from ..service.fleet import Fleet
from ..service.metrics import Metrics
from ..service.policy import AllocatorPolicy, PolicyError
from ..service.provider import ProviderService
from ..service.store import StoreError, open_store


def register(sub):
    p = sub.add_parser("dsa", help="the Dynamic Shard Allocator service")
    dsub = p.add_subparsers(dest="dsa_command", metavar="ACTION", required=True)
    r = dsub.add_parser("run", help="run the service from a config file (TOML)")
    r.add_argument("config")
    r.add_argument("--for", dest="duration", type=float, default=None, help="stop after SECONDS")
    r.add_argument("--quiet", action="store_true", help="do not print the event log")
    r.set_defaults(func=run)


def _say(text):
    print(f"[dsa {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(args):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = service_config.load(args.config)
        keystore = Keystore.load(cfg.keystore)
        policy = AllocatorPolicy.from_files(cfg.catalog, cfg.agreements, cfg.default_tier, cfg.board_aliases)
        store = open_store(cfg.store_url)
    except (service_config.ConfigError, InputError, PolicyError, StoreError) as e:
        print(f"capshard dsa run: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"capshard dsa run: keystore {cfg.keystore}: {e.strerror}", file=sys.stderr)
        return 1
    metrics = Metrics()
    service = ProviderService(cfg.broker_host, cfg.broker_port, keystore, fleet=Fleet(store), policy=policy,
                              brokers=cfg.brokers,
                              options=cfg.options, metrics=metrics, client_id=cfg.client_id,
                              username=cfg.username, password=cfg.password, share_group=cfg.share_group)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service.start()
    except (OSError, RuntimeError) as e:
        print(f"capshard dsa run: broker {cfg.broker_host}:{cfg.broker_port}: {e}", file=sys.stderr)
        return 1
    _say(f"connected to {cfg.broker_host}:{cfg.broker_port}; fleet store {store.dialect}; "
         f"tiers {', '.join(policy.tiers())} (default {cfg.default_tier}); {len(store.list_devices())} device(s) known")
    if cfg.metrics_port is not None:
        _say(f"metrics on http://{cfg.metrics_addr}:{metrics.serve(cfg.metrics_port, cfg.metrics_addr)}/metrics")
    watched = [cfg.catalog or DEFAULT_CATALOG, cfg.agreements or DEFAULT_AGREEMENTS]
    stamps = _mtimes(watched)
    last_event = store.last_event_id()
    deadline = time.monotonic() + args.duration if args.duration is not None else None
    try:
        while not stop.wait(0.5):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not args.quiet:
                for e in store.events(after_id=last_event):
                    last_event = e["id"]
                    print(f"  {e['device_id'] or '-':<16} {e['kind']:<11} {e['text']}", flush=True)
            now_stamps = _mtimes(watched)
            if now_stamps != stamps:
                stamps = now_stamps
                try:
                    new = AllocatorPolicy.from_files(cfg.catalog, cfg.agreements, cfg.default_tier,
                                                     cfg.board_aliases)
                except (InputError, PolicyError) as e:
                    _say(f"catalog/agreements changed but are invalid, keeping the old ones: {e}")
                    continue
                _say(f"catalog/agreements changed: re-planning {len(service.set_policy(new))} device(s)")
    finally:
        service.stop()
        metrics.stop()
        store.close()
        _say("stopped")
    return 0


def _mtimes(paths):
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_mtime_ns)
        except OSError:
            out.append(None)
    return out
