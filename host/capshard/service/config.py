"""The DSA service's configuration file (TOML). Relative paths are relative
to the file. Every section is optional; see docs/service.md for an example."""

import dataclasses
import os
import tomllib

from .reconcile import ReconcileOptions

SECTIONS = {"broker", "store", "keys", "allocator", "reconcile", "metrics", "service"}


class ConfigError(ValueError):
    """A config file the service cannot use; the text names the file and key."""


@dataclasses.dataclass
class ServiceConfig:
    path: str
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    brokers: list = dataclasses.field(default_factory=list)  # [(host, port)]: the cluster's nodes, in order
    username: str | None = None
    password: str | None = None
    store_url: str | None = None
    keystore: str = "keys.json"
    catalog: str | None = None
    agreements: str | None = None
    default_tier: str = "standard"
    board_aliases: dict | None = None
    options: ReconcileOptions = dataclasses.field(default_factory=ReconcileOptions)
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    client_id: str = "capshard-provider"
    share_group: str | None = None


def load(path):
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - SECTIONS
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(SECTIONS))})")
    base = os.path.dirname(os.path.abspath(path))

    def rel(p):
        return p if p is None or os.path.isabs(p) or "://" in p or p == ":memory:" else os.path.join(base, p)

    def get(section, key, kind, default=None):
        value = doc.get(section, {}).get(key, default)
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{path}: [{section}] {key} must be {getattr(kind, '__name__', kind)}, "
                              f"got {value!r}")
        return value

    cfg = ServiceConfig(path)
    cfg.broker_host = get("broker", "host", str, cfg.broker_host)
    cfg.broker_port = get("broker", "port", int, cfg.broker_port)
    nodes = get("broker", "hosts", list)
    if nodes is not None:
        if "host" in doc.get("broker", {}):
            raise ConfigError(f"{path}: [broker] give host or hosts, not both")
        if not nodes:
            raise ConfigError(f"{path}: [broker] hosts is empty")
        cfg.brokers = [_node(path, n, cfg.broker_port) for n in nodes]
        cfg.broker_host, cfg.broker_port = cfg.brokers[0]
    else:
        cfg.brokers = [(cfg.broker_host, cfg.broker_port)]
    cfg.username = get("broker", "username", str)
    cfg.password = get("broker", "password", str)
    if "url" in doc.get("store", {}) and "dsn" in doc.get("store", {}):
        raise ConfigError(f"{path}: [store] give url or dsn, not both")
    cfg.store_url = rel(get("store", "url", str) or get("store", "dsn", str))
    cfg.keystore = rel(get("keys", "keystore", str, cfg.keystore))
    cfg.catalog = rel(get("allocator", "catalog", str))
    cfg.agreements = rel(get("allocator", "agreements", str))
    cfg.default_tier = get("allocator", "default_tier", str, cfg.default_tier)
    cfg.board_aliases = get("allocator", "board_aliases", dict)
    fields = {f.name: f.type for f in dataclasses.fields(ReconcileOptions)}
    opts = {}
    for key, value in doc.get("reconcile", {}).items():
        if key not in fields:
            raise ConfigError(f"{path}: [reconcile] unknown key {key!r} (known: {', '.join(sorted(fields))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (value < 0 and key != "renew_before_s"):
            raise ConfigError(f"{path}: [reconcile] {key} must be a number >= 0, got {value!r}")
        opts[key] = value
    cfg.options = ReconcileOptions(**opts)
    cfg.metrics_port = get("metrics", "port", int)
    cfg.metrics_addr = get("metrics", "addr", str, cfg.metrics_addr)
    cfg.client_id = get("service", "client_id", str, cfg.client_id)
    cfg.share_group = get("service", "share_group", str)
    return cfg


def _node(path, node, default_port):
    """One broker of a cluster: "host", "host:port" or {host, port}."""
    if isinstance(node, dict) and isinstance(node.get("host"), str) and node["host"]:
        port = node.get("port", default_port)
    elif isinstance(node, str) and node:
        host, sep, port = node.rpartition(":")
        if not sep or not host:
            host, port = node, default_port
        else:
            try:
                port = int(port)
            except ValueError:
                raise ConfigError(f"{path}: [broker] hosts: bad port in {node!r}") from None
        node = {"host": host}
    else:
        raise ConfigError(f"{path}: [broker] hosts: each is \"host[:port]\" or {{host, port}}, got {node!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{path}: [broker] hosts: bad port {port!r} for {node['host']!r}")
    return (node["host"], port)
