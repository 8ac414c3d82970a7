"""The operator CLI over a real fleet: `dsa run` as its own process with a
real device, then the read commands' --json output, `agreement assign`,
`usage` (JSON and CSV, with a lease that lapsed on the device), and the
metrics endpoint."""

import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from capshard import cli, localdev
from capshard.broker import free_port
from capshard.service.fleet import Fleet, profiles_match
from capshard.service.policy import MINIMAL_BASELINE, minimal_baseline
from capshard.service.provider import ProviderService
from capshard.service.reconcile import ReconcileOptions
from capshard.service.store import open_store
from polling import wait_until

DATA = os.path.join(os.path.dirname(__file__), "data")
PROBE = {"op": "activate", "shard": "rt-probe", "ver": "1.0.0", "slot": "monitoring.probe", "cpu": 5, "mem_kb": 8,
         "bw_kbps": 100, "prio": "high", "dur_s": 2, "alt": None, "module": "capdev.shards.counter"}


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, out


def wait_for(predicate, timeout):
    return wait_until(predicate, timeout, 0.1)


def scrape(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None


def metric(body, name):
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exposed")


def test_dsa_run_serves_a_device_and_the_cli_reads_the_fleet(tmp_path, broker, keystore, agents, capsys):
    db = str(tmp_path / "fleet.sqlite")
    metrics_port = free_port()
    (tmp_path / "dsa.toml").write_text(f"""
[broker]
host = "{broker.host}"
port = {broker.port}
[store]
url = "fleet.sqlite"
[keys]
keystore = "keys.json"
[allocator]
catalog = "{DATA}/catalog.toml"
agreements = "{DATA}/agreements.toml"
default_tier = "lab"
[reconcile]
check_delay_s = 0.2
[metrics]
port = {metrics_port}
""")
    keystore.provision("dev-cli")
    keystore.save(str(tmp_path / "keys.json"))
    dsa = subprocess.Popen([sys.executable, "-m", "capshard", "dsa", "run", str(tmp_path / "dsa.toml"), "--for", "90"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: scrape(metrics_port), 15)   # metrics serve once the service is subscribed
        proc_dev = agents("dev-cli", "cpython", keystore)
        def converged():
            code, out = run_cli(capsys, "devices", "--db", db, "--json")
            devs = json.loads(out) if code == 0 else []
            return devs if devs and devs[0]["converged"] and devs[0]["online"] else None
        devs = wait_for(converged, 20)
        assert devs, localdev.read_log(proc_dev) + (dsa.kill() or dsa.communicate()[0])
        assert devs[0]["device"] == "dev-cli" and devs[0]["reported"] == ["null-cipher"]

        body = scrape(metrics_port)
        assert metric(body, "capshard_devices_online") == 1
        assert metric(body, 'capshard_instructions_total{outcome="SUCCEEDED"}') >= 1
        assert metric(body, "capshard_decision_latency_seconds_count") >= 1

        # a tier change from the CLI reaches the device through the running service
        code, out = run_cli(capsys, "agreement", "assign", "lean", "--group", "dev-*", "--db", db, "--json",
                            "--catalog", f"{DATA}/catalog.toml", "--agreements", f"{DATA}/agreements.toml")
        assert code == 0 and json.loads(out) == {"tier": "lean", "changed": ["dev-cli"], "unchanged": []}
        shown = wait_for(lambda: (d := json.loads(run_cli(capsys, "device", "show", "dev-cli", "--db", db,
                                                          "--json")[1]))["tier"] == "lean" and d, 10)
        assert shown["shards"][0]["shard"] == "null-cipher" and shown["shards"][0]["match"]
        assert shown["birth"]["runtime"] == "cpython"
        assert [i["state"] for i in shown["instructions"]][-1] == "SUCCEEDED"

        code, out = run_cli(capsys, "events", "--db", db, "--json", "--device", "dev-cli")
        kinds = [json.loads(line)["kind"] for line in out.splitlines()]
        assert code == 0 and kinds[0] == "birth" and "agreement" in kinds and "ack" in kinds
    finally:
        dsa.terminate()
        out, _ = dsa.communicate(timeout=10)
    assert dsa.returncode == 0, out
    assert "stopped" in out

    code, _ = run_cli(capsys, "device", "show", "nobody", "--db", db, "--json")
    assert code == 1


def test_usage_matches_the_log_including_a_lease_that_lapsed_on_the_device(tmp_path, broker, keystore, agents,
                                                                           capsys):
    db = str(tmp_path / "fleet.sqlite")
    svc = ProviderService(broker.host, broker.port, keystore, minimal_baseline, fleet=Fleet(open_store(db)),
                          options=ReconcileOptions(renew_before_s=-1, check_delay_s=0.2)).start()
    try:
        proc = agents("dev-u", "cpython", keystore)
        assert svc.fleet.wait_until(lambda f: (r := f.device("dev-u")) and r.reported and
                                    profiles_match(r.desired, r.reported), 20), localdev.read_log(proc)
        svc.set_desired("dev-u", MINIMAL_BASELINE + [PROBE], expires_at=time.time() + 2)
        assert svc.fleet.wait_until(lambda f: "rt-probe" in f.device("dev-u").reported, 10), localdev.read_log(proc)
        # the device drops the probe by itself when its 2 s lease lapses (the provider re-plans 1 s later)
        assert svc.fleet.wait_until(lambda f: "rt-probe" not in f.device("dev-u").reported, 10)
        acked = [i for i in svc.fleet.instructions_of("dev-u") if i.state == "SUCCEEDED"]
        assert "rt-probe" in {o["shard"] for o in acked[-1].ops}    # no removal had been acked yet
    finally:
        svc.stop()
    end = str(time.time())   # a fixed period end: the baseline is still running
    code, out = run_cli(capsys, "usage", "--db", db, "--json", "--to", end)
    assert code == 0
    report = json.loads(out)
    probe = [r for r in report["rows"] if r["shard"] == "rt-probe"]
    assert len(probe) == 1 and probe[0]["shard_seconds"] == 2.0       # exactly its lease
    assert probe[0]["cpu_seconds"] == 10.0 and probe[0]["bw_kbit"] == 200.0

    code, out = run_cli(capsys, "usage", "--db", db, "--csv", "--device", "dev-u", "--to", end)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["shard"] for r in rows} == {"null-cipher", "rt-probe"}
    assert sum(float(r["shard_seconds"]) for r in rows) == pytest.approx(report["totals"]["shard_seconds"], abs=1e-9)

    code, out = run_cli(capsys, "usage", "--db", db, "--from=-1h", "--to", "yesterday-ish")
    assert code == 2


@pytest.mark.parametrize("args, code", [(["--catalog", os.path.join(DATA, "catalog.toml"),
                                          "--agreements", os.path.join(DATA, "agreements.toml")], 0)])
def test_catalog_validate_json(args, code, capsys, tmp_path):
    got, out = run_cli(capsys, "catalog", "validate", "--json", *args)
    data = json.loads(out)
    assert got == code and data["valid"] and data["tiers"] == ["lab", "lean"] and data["shards"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text(open(os.path.join(DATA, "catalog.toml")).read().replace('slot = "monitoring.probe"',
                                                                           'slot = "monitoring.nothing"'))
    got, out = run_cli(capsys, "catalog", "validate", "--json", "--catalog", str(bad),
                       "--agreements", os.path.join(DATA, "agreements.toml"))
    data = json.loads(out)
    assert got == 1 and not data["valid"] and "monitoring.nothing" in data["error"]


def test_read_commands_refuse_a_store_that_is_not_there(tmp_path, capsys):
    missing = tmp_path / "typo" / "fleet.sqlite"
    for argv in (["devices"], ["device", "show", "dev-1"], ["events"], ["usage"]):
        code = cli.main([*argv, "--db", str(missing)])
        err = capsys.readouterr().err
        assert code != 0 and f"no fleet store at {missing}" in err, argv
    assert not (tmp_path / "typo").exists()  # nothing created on the way
    # assigning a tier may come before the provider ever ran: that creates the store
    code, out = run_cli(capsys, "agreement", "assign", "premium", "--device", "dev-1", "--db", str(tmp_path / "new.sqlite"))
    assert code == 0, out
    code, out = run_cli(capsys, "devices", "--db", str(tmp_path / "new.sqlite"), "--json")
    assert code == 0 and [(d["device"], d["tier"]) for d in json.loads(out)] == [("dev-1", "premium")], out
