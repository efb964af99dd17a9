"""One metrics dict, many sinks: metrics.json and an offline W&B run read back from disk."""

import ipaddress
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fewshot_sla import tracking
from fewshot_sla.runs import group_id, identity
from fewshot_sla.tracking import RunLogger, format_table
from fewshot_sla.utils import read_json

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_json_records_config_commit_and_nan(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = RunLogger(tmp_path, {"seed": 3, "lr": 0.1}, wandb_mode="offline", quiet=True)
    log.log({"train/loss": 1.5}, step=0)
    log.finish({"test/acc": 0.5, "test/acc_few": math.nan}, extra={"class_counts": [5, 1]})
    m = read_json(tmp_path / "metrics.json")
    assert m["test/acc"] == 0.5 and m["test/acc_few"] is None  # strict JSON: NaN is written as null
    assert m["config"] == {"seed": 3, "lr": 0.1} and m["class_counts"] == [5, 1]
    assert "git_commit" in m
    assert json.loads((tmp_path / "history.jsonl").read_text().splitlines()[0]) == {"step": 0, "train/loss": 1.5}
    assert log.run is None


def test_disabled_rank_writes_nothing(tmp_path):
    log = RunLogger(tmp_path / "r1", {}, enabled=False)
    log.log({"a": 1.0})
    assert log.finish({"a": 1.0}) is None
    assert not (tmp_path / "r1").exists()


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'"):
        RunLogger("x", {}, wandb_mode="cloud")


@pytest.mark.slow
def test_offline_wandb_run_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    log = RunLogger(tmp_path, {"seed": 0}, wandb_mode="offline", quiet=True)
    assert log.run is not None
    log.log({"train/loss": 0.25}, step=1)
    log.log_per_class("test/per_class_acc", [0.5, 0.75, 1.0], ["a", "b", "c"], train_counts=[100, 10, 1], step=2)
    log.log_confusion("test/confusion", [0, 1, 2], [0, 2, 2], ["a", "b", "c"], step=2)
    run_dir = log.wandb_dir
    log.finish({"test/acc": 0.75})
    assert run_dir is not None and run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("run-*.wandb")), "no W&B transaction log"
    saved = json.loads((run_dir / "files" / "metrics.json").read_text())
    assert saved["test/acc"] == 0.75
    tables = list((run_dir / "files" / "media" / "table").glob("test/per_class_acc*.table.json")) or list(
        (run_dir / "files" / "media" / "table").rglob("*per_class_acc*.table.json")
    )
    assert tables, f"no per-class table in {run_dir}"
    t = json.loads(tables[0].read_text())
    assert t["columns"] == ["class", "name", "accuracy", "train_count"]
    assert [row[2] for row in t["data"]] == [0.5, 0.75, 1.0]
    assert list((run_dir / "files" / "media" / "table").rglob("*confusion*.table.json"))


def test_wandb_failure_never_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")

    class Boom:
        def init(self, *a, **k):
            raise RuntimeError("no server")

    monkeypatch.setitem(sys.modules, "wandb", Boom())
    with pytest.warns(UserWarning, match="W&B init failed.*no server"):
        log = RunLogger(tmp_path, {}, quiet=True)
    log.log({"a": 1.0})
    log.finish({"a": 1.0})
    assert (tmp_path / "metrics.json").exists()


def test_format_table():
    s = format_table([{"method": "SLA+AG", "acc": 0.5}, {"method": "base", "acc": math.nan}])
    assert s.splitlines()[0] == "| method | acc    |"
    assert "| base   | nan    |" in s


def test_import_does_not_pull_wandb_or_learn2learn():
    import subprocess

    code = "import sys, fewshot_sla, fewshot_sla.tracking, fewshot_sla.model; " \
           "print('wandb' in sys.modules, 'learn2learn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- offline means offline ---------------------------------------------------------------------
_OFFLINE_RUN = textwrap.dedent(
    """
    import sys
    from fewshot_sla.tracking import RunLogger

    log = RunLogger(sys.argv[1], {"seed": 0, "lr": 0.1}, quiet=True)  # the default: offline
    assert log.run is not None, "no W&B run"
    for step in range(3):
        log.log({"train/loss": 1.0 / (step + 1), "train/acc": 0.1 * step}, step=step)
    log.log_table("episodes", ["episode", "acc"], [[0, 0.5], [1, 0.75]], step=3)
    log.log_per_class("test/per_class_acc", [0.5, 0.75], ["a", "b"], train_counts=[10, 1], step=3)
    print("WANDB_DIR", log.wandb_dir)
    log.finish({"test/acc": 0.75})
    """
)


def _non_loopback_connects(trace: str) -> list[str]:
    """``connect()`` calls of an ``strace -f -e trace=connect`` log to anything but loopback or
    a unix socket."""
    bad = []
    for line in trace.splitlines():
        if "connect(" not in line or "AF_UNIX" in line or "AF_LOCAL" in line:
            continue
        addrs = re.findall(r'inet_(?:addr|pton)\((?:AF_INET6?, )?"([^"]+)"', line)
        if not addrs:  # e.g. AF_NETLINK, or an address family strace did not decode
            if "AF_NETLINK" not in line:
                bad.append(line)
            continue
        if not all(ipaddress.ip_address(a).is_loopback for a in addrs):
            bad.append(line)
    return bad


def test_strace_parser():
    ok = [
        'connect(3, {sa_family=AF_UNIX, sun_path="/tmp/x.sock"}, 110) = 0',
        'connect(5, {sa_family=AF_INET, sin_port=htons(41234), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '[pid 7] connect(5, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
    ]
    bad = [
        'connect(5, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.0.0.2")}, 16) = 0',
        '[pid 9] connect(7, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "2600::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH',
    ]
    assert _non_loopback_connects("\n".join(ok)) == []
    assert _non_loopback_connects("\n".join(ok + bad)) == bad


@pytest.mark.slow
def test_default_offline_run_touches_no_network_and_no_home(tmp_path):
    strace = shutil.which("strace") or ("/usr/bin/strace" if os.path.exists("/usr/bin/strace") else None)
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace); it records the run's connect() calls")
    probe = subprocess.run([strace, "-f", "-e", "trace=connect", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (no ptrace permission?): {probe.stderr.strip()[:200]}")
    home, out, script = tmp_path / "home", tmp_path / "out", tmp_path / "run.py"
    home.mkdir()
    script.write_text(_OFFLINE_RUN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), WANDB_MODE="offline")
    trace = tmp_path / "strace.log"
    res = subprocess.run(
        [strace, "-f", "-qq", "-s", "256", "-o", str(trace), "-e", "trace=connect,execve", sys.executable,
         str(script), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    log = trace.read_text()
    bad = _non_loopback_connects(log)
    assert not bad, "an offline W&B run connected to the network:\n" + "\n".join(bad[:10])
    # Sentry's lookup only happens when W&B's service reports something, so the trace above can be
    # clean by luck; the service must also have been started with error reporting off.
    core = [ln for ln in log.splitlines() if "execve(" in ln and "wandb-core" in ln and "ENOENT" not in ln]
    assert core, "wandb-core was not started (the W&B service layout changed?)"
    assert all("--no-observability" in ln for ln in core), core[0][:500]
    # nothing staged in the home folder: W&B's data, cache and config stay in OUT
    for d in (home / ".local" / "share" / "wandb", home / ".cache" / "wandb"):
        assert not d.exists() or not any(d.rglob("*")), f"the run wrote to {d}: {sorted(d.rglob('*'))[:5]}"
    assert not (tmp_path / "artifacts").exists()  # WANDB_ARTIFACT_DIR's default is ./artifacts
    run_dir = Path(res.stdout.split("WANDB_DIR", 1)[1].split()[0])
    assert run_dir.parent == out / "wandb" and list(run_dir.glob("run-*.wandb"))
    staged = [p for p in (out / "wandb").rglob("*") if p.is_file() and "offline-run-" not in str(p)]
    assert any(".data" in p.parts for p in staged), f"no W&B staging files under {out / 'wandb'}"


_WANDB_DIR_VARS = ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_ERROR_REPORTING", "WANDB_SILENT")


class _FakeRun:
    def __init__(self, seen):
        self.seen, self.dir, self.summary = seen, "/nonexistent/files", {}

    def log(self, *a, **k):
        pass

    def save(self, *a, **k):
        pass

    def finish(self):
        self.seen["finish"] = {k: os.environ.get(k) for k in _WANDB_DIR_VARS}


class _FakeWandb:
    def __init__(self):
        self.seen = {}

    def init(self, **kwargs):
        self.seen["init"] = {k: os.environ.get(k) for k in _WANDB_DIR_VARS}
        self.seen["kwargs"] = kwargs
        return _FakeRun(self.seen)


def test_wandb_env_set_during_the_run_and_restored_after(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_ERROR_REPORTING", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    monkeypatch.setenv("WANDB_CACHE_DIR", "/somewhere/else")  # a previous value to put back
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    before = {k: os.environ.get(k) for k in _WANDB_DIR_VARS}
    log = RunLogger(tmp_path / "r", {"seed": 1}, quiet=True)
    during = fake.seen["init"]
    base = (tmp_path / "r" / "wandb").resolve()
    assert during["WANDB_DATA_DIR"] == str(base / ".data")
    assert during["WANDB_CACHE_DIR"] == str(base / ".cache")
    assert during["WANDB_ARTIFACT_DIR"] == str(base / ".artifacts")
    assert during["WANDB_ERROR_REPORTING"] == "false"
    assert fake.seen["kwargs"]["group"] == group_id(identity({"seed": 1}, (), {}))
    log.finish({"a": 1.0})
    assert fake.seen["finish"] == during  # still set while W&B finishes (it stages files then)
    assert {k: os.environ.get(k) for k in _WANDB_DIR_VARS} == before


def test_user_error_reporting_choice_and_online_mode_kept(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "true")
    RunLogger(tmp_path / "a", {}, quiet=True).finish({})
    assert fake.seen["init"]["WANDB_ERROR_REPORTING"] == "true"
    monkeypatch.delenv("WANDB_ERROR_REPORTING")
    monkeypatch.setenv("WANDB_MODE", "online")
    RunLogger(tmp_path / "b", {}, wandb_mode="online", quiet=True).finish({})
    assert fake.seen["init"]["WANDB_ERROR_REPORTING"] is None  # online: W&B's own default
    assert "WANDB_ERROR_REPORTING" not in os.environ


def test_env_restored_when_wandb_init_fails(tmp_path, monkeypatch):
    class Boom:
        def init(self, **k):
            raise RuntimeError("no server")

    monkeypatch.setitem(sys.modules, "wandb", Boom())
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    with pytest.warns(UserWarning, match="W&B init failed"):
        RunLogger(tmp_path, {}, quiet=True)
    assert "WANDB_DATA_DIR" not in os.environ


def test_default_group_is_the_run_rule_without_package_keys(tmp_path, monkeypatch):
    # One rule (fewshot_sla.runs.group_id), no package schema in tracking: the recipe passes group= (its record's);
    # without one, the config minus the engine's RUN_KEYS names the group.
    assert not hasattr(tracking, "GROUP_IGNORE") and not hasattr(tracking, "run_group")
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = {"loss": "ldam", "transform": "rotation", "lr": 0.1, "seed": 0, "out": "runs/a", "device": "cpu"}
    same = {**base, "seed": 7, "out": "runs/b", "device": "cuda", "resume": True, "wandb": "disabled"}

    def group(cfg):
        RunLogger(tmp_path / "r", cfg, quiet=True).finish({})
        return fake.seen["kwargs"]["group"]

    g = group(base)
    assert g == group(same) == group(dict(reversed(list(base.items())))) == group_id(identity(base, (), {}))
    assert re.fullmatch(r"cfg-[0-9a-f]{10}", g)
    assert group({**base, "lr": 0.01}) != g
    assert group({**base, "data_root": "elsewhere"}) != g  # package keys are the recipe's to leave out, via group=


def test_explicit_group_wins(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    RunLogger(tmp_path, {"seed": 0}, group="mine", quiet=True).finish({})
    assert fake.seen["kwargs"]["group"] == "mine"
    RunLogger(tmp_path, {}, quiet=True).finish({})
    assert fake.seen["kwargs"]["group"] is None


def test_history_jsonl_is_strict_json(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = RunLogger(tmp_path, {}, quiet=True)
    log.log({"train/loss": math.nan, "train/acc": 0.5}, step=0)
    line = (tmp_path / "history.jsonl").read_text().splitlines()[0]
    row = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in {line}"))
    assert row == {"step": 0, "train/loss": None, "train/acc": 0.5}
