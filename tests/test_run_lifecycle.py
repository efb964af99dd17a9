"""A run's life in its folder, the same for ``sla-fewshot`` and ``sla-longtail`` (:mod:`fewshot_sla.lifecycle`).

Each test failed on the code before the lifecycle module: ``--test-only`` of an unfinished run wrote a metrics.json
that ``sla-report`` tabled as a finished seed; a new run in a folder holding another run kept its best.pt (or
overwrote a finished run); a checkpoint of another record was loaded; ``--resume`` needed ``--config``; a resume
under another process count was accepted; Ctrl-C ended with a traceback and no checkpoint of the last unit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from fewshot_sla import engine as eng
from fewshot_sla import lifecycle, runs
from fewshot_sla.config import ConfigError
from fewshot_sla.report import load_runs
from fewshot_sla.utils import DataError, read_json


@dataclasses.dataclass
class Pkg:
    name: str
    command: str
    units: int
    unit: str  # the unit's name in messages
    done_key: str  # metrics.json's count of units done
    half: int  # units of a run stopped early (fewshot: after its first validation at 2, which writes best.pt)

    def cfg(self, data: Path, out: Path, **kw: Any) -> Any:
        if self.name == "fewshot":
            from tests.episodes.test_record import _cfg

            return _cfg(data, out, **kw)
        from tests.longtail.synthetic import tiny

        return tiny(data, out, epochs=self.units, limit_test=16, **kw)

    def data(self, root: Path) -> Path:
        if self.name == "fewshot":
            from tests.episodes.test_record import _folder

            _folder(root, [f"k{i:02d}" for i in range(12)])
            return root
        from tests.longtail.synthetic import write_folder

        return write_folder(root, 12, 4, seed=0)

    def run(self, cfg: Any) -> dict[str, Any]:
        if self.name == "fewshot":
            from episodes.train import run
        else:
            from longtail.benchmark import run
        return run(cfg)

    def main(self, argv: list[str]) -> int:
        if self.name == "fewshot":
            from episodes.train import main
        else:
            from longtail.benchmark import main
        return main(argv)

    def argv(self, cfg: Any) -> list[str]:
        """The command line of ``cfg`` (its non-default fields)."""
        default = type(cfg)()
        out: list[str] = []
        for f in dataclasses.fields(cfg):
            v = getattr(cfg, f.name)
            if v == getattr(default, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                out.append(flag if v else f"--no-{flag[2:]}")
            elif isinstance(v, (tuple, list)):
                out += [flag, *map(str, v)]
            else:
                out += [flag, str(v)]
        return out


PKGS = [Pkg("fewshot", "sla-fewshot", 4, "step", "steps_done", 3), Pkg("longtail", "sla-longtail", 3, "epoch",
                                                                         "epochs_done", 1)]


@pytest.fixture(params=PKGS, ids=lambda p: p.name)
def pkg(request):
    return request.param


@pytest.fixture
def data(pkg, tmp_path):
    return pkg.data(tmp_path / "data")


def _history(out: str | Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (Path(out) / "history.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if "time" not in k and k != "_timestamp"} for r in rows]


def _scores(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k.startswith(("test/", "val/"))}


# -- 1. --test-only of an unfinished run -------------------------------------------------------------------------------
def test_test_only_refuses_an_unfinished_run_and_records_finished_false_when_allowed(pkg, data, tmp_path, capsys):
    cfg = pkg.cfg(data, tmp_path / "run", stop_after=pkg.half)
    pkg.run(cfg)
    with pytest.raises(ConfigError) as e:
        pkg.run(dataclasses.replace(cfg, stop_after=0, test_only=True))
    msg = str(e.value)
    assert f"{pkg.half} of {pkg.units} {pkg.unit}s" in msg and f"{pkg.command} --out {cfg.out} --resume" in msg
    assert "--allow-unfinished" in msg and not (Path(cfg.out) / "metrics.json").exists()
    capsys.readouterr()
    assert pkg.main([*pkg.argv(cfg), "--test-only"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line, no traceback

    m = pkg.run(dataclasses.replace(cfg, stop_after=0, test_only=True, allow_unfinished=True))
    saved = read_json(Path(cfg.out) / "metrics.json")
    assert m["finished"] is False and saved["finished"] is False and saved[pkg.done_key] == pkg.half
    (r,) = load_runs([cfg.out])
    assert not r.finished and r.status.startswith(f"unfinished: {pkg.half}")


# -- 2. a folder holding another run; checkpoints carry the record's hash -------------------------------------------
def test_a_new_run_in_a_folder_holding_another_is_refused_and_overwrite_starts_clean(pkg, data, tmp_path):
    cfg = pkg.cfg(data, tmp_path / "run")
    first = pkg.run(cfg)
    with pytest.raises(ConfigError) as e:  # the same command again, without --resume
        pkg.run(cfg)
    msg = str(e.value)
    assert str(cfg.out) in msg and "a finished run" in msg and "metrics.json" in msg
    assert "--resume" in msg and "--overwrite" in msg
    other = dataclasses.replace(cfg, seed=1, overwrite=True)
    again = pkg.run(other)
    assert again["test/acc"] != first["test/acc"] or _history(cfg.out) != []  # trained again, from seed 1
    h = lifecycle.folder_hash(cfg.out)
    assert runs.read_record(cfg.out)["config"]["seed"] == 1
    for name in ("checkpoint.pt", "best.pt"):
        if (Path(cfg.out) / name).is_file():
            assert torch.load(Path(cfg.out) / name, weights_only=True)["record"] == h


def test_a_checkpoint_of_another_record_is_refused_and_one_without_a_hash_loads(pkg, data, tmp_path):
    a = pkg.cfg(data, tmp_path / "a")
    pkg.run(a)
    b = pkg.cfg(data, tmp_path / "b", lr=0.05)
    pkg.run(b)
    weights = "best.pt" if pkg.name == "fewshot" else "checkpoint.pt"
    shutil.copy(Path(a.out) / weights, Path(b.out) / weights)
    load_run = __import__("episodes" if pkg.name == "fewshot" else "longtail").load_run
    with pytest.raises(DataError, match="another run than the record"):
        pkg.run(dataclasses.replace(b, test_only=True))
    with pytest.raises(DataError, match="another run than the record"):
        load_run(b.out)
    # a checkpoint written before checkpoints carried a hash still loads
    st = torch.load(Path(b.out) / weights, weights_only=True)
    del st["record"]
    torch.save(st, Path(b.out) / weights)
    assert "test/acc" in pkg.run(dataclasses.replace(b, test_only=True))
    load_run(b.out)


# -- 3. resume by folder; 6. a signal stops at a safe point --------------------------------------------------------
def test_a_signal_stops_with_one_line_and_the_folder_alone_resumes_exactly(pkg, data, tmp_path, capsys,
                                                                          monkeypatch):
    whole = pkg.cfg(data, tmp_path / "whole")
    assert pkg.main(pkg.argv(whole)) == 0
    cut = dataclasses.replace(whole, out=str(tmp_path / "cut"))
    train_unit = eng._train_unit

    def send_at_2(u, *a, **kw):  # the signal arrives in the middle of the second unit
        if u == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return train_unit(u, *a, **kw)

    monkeypatch.setattr(eng, "_train_unit", send_at_2)
    capsys.readouterr()
    assert pkg.main(pkg.argv(cut)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line or line.startswith(("stopped", "error")) for line in err[:-1])
    ckpt = Path(cut.out) / "checkpoint.pt"
    assert err[-1:] == [f"stopped by SIGINT after {pkg.unit} 2 of {pkg.units}; checkpoint {ckpt}; "
                        f"resume with: {pkg.command} --out {cut.out} --resume"]
    assert torch.load(Path(cut.out) / "checkpoint.pt", weights_only=True)["unit"] == 2
    monkeypatch.setattr(eng, "_train_unit", train_unit)
    st = torch.load(ckpt, weights_only=True)  # a checkpoint as written before checkpoints carried the record's hash
    del st["record"]
    torch.save(st, ckpt)
    assert pkg.main(["--out", cut.out, "--resume"]) == 0  # the folder alone
    assert _history(cut.out) == _history(whole.out)
    assert _scores(read_json(Path(cut.out) / "metrics.json")) == _scores(read_json(Path(whole.out) / "metrics.json"))


def test_sigterm_exits_143(tmp_path, monkeypatch, capsys):
    pkg = PKGS[0]
    cfg = pkg.cfg(pkg.data(tmp_path / "data"), tmp_path / "run")
    train_unit = eng._train_unit

    def send(u, *a, **kw):
        if u == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_unit(u, *a, **kw)

    monkeypatch.setattr(eng, "_train_unit", send)
    assert pkg.main(pkg.argv(cfg)) == 143
    assert "stopped by SIGTERM after step 1 of 4" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are restored


def test_time_based_checkpoints_resume_exactly(tmp_path, monkeypatch):
    pkg = PKGS[0]
    data = pkg.data(tmp_path / "data")
    whole = pkg.cfg(data, tmp_path / "whole", checkpoint_every=1000, checkpoint_minutes=0)
    pkg.run(whole)
    saved: list[int] = []
    save = eng._save_checkpoint
    monkeypatch.setattr(eng, "_save_checkpoint", lambda p, t, o, s, loop, st, *a: (saved.append(st.unit),
                                                                                  save(p, t, o, s, loop, st, *a)))
    pkg.run(dataclasses.replace(whole, out=str(tmp_path / "w2")))
    assert saved == [4]  # every 1000 steps and at the end: once
    saved.clear()
    cut = dataclasses.replace(whole, out=str(tmp_path / "cut"), checkpoint_minutes=1e-9)  # a clock that is always due
    train_unit = eng._train_unit

    def killed_at_3(u, *a, **kw):  # the process dies in step 3 (no signal handler runs: SIGKILL, power loss)
        if u == 2:
            raise RuntimeError("killed")
        return train_unit(u, *a, **kw)

    monkeypatch.setattr(eng, "_train_unit", killed_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        pkg.run(cut)
    assert saved == [1, 2]
    monkeypatch.setattr(eng, "_train_unit", train_unit)
    m = pkg.run(dataclasses.replace(cut, resume=True))
    assert _history(cut.out) == _history(whole.out)
    assert _scores(m) == _scores(read_json(Path(whole.out) / "metrics.json"))


def test_resume_argv_reads_the_recorded_config_only_when_asked(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    out = str(tmp_path)
    assert lifecycle.resume_argv(["--out", out, "--resume"]) == ["--config", f"{out}/config.yaml", "--out", out,
                                                                 "--resume"]
    assert lifecycle.resume_argv(["--out", out]) == ["--out", out]
    assert lifecycle.resume_argv(["--config", "x.yaml", "--out", out, "--resume"])[:2] == ["--config", "x.yaml"]
    assert lifecycle.resume_argv(["--out", str(tmp_path / "none"), "--resume"])[0] == "--out"


# -- 5. the process count is recorded; a change that changes training is refused -------------------------------------
def test_resume_under_another_process_count_is_refused_where_it_changes_training(pkg, data, tmp_path):
    cfg = pkg.cfg(data, tmp_path / "run", stop_after=1)
    pkg.run(cfg)
    rec_path = Path(cfg.out) / runs.RECORD_FILE
    rec = read_json(rec_path)
    assert rec["processes"] == {"world_size": 1, "sync_bn": False}
    rec["processes"]["world_size"] = 2  # as if trained under torchrun --nproc_per_node=2
    rec_path.write_text(json.dumps(rec))
    resume = dataclasses.replace(cfg, stop_after=0, resume=True)
    if pkg.name == "longtail":
        with pytest.raises(ConfigError, match=r"trained by 2 process\(es\), now 1: without --sync-bn"):
            pkg.run(resume)
    else:  # the episodic learners replay every rank's BatchNorm updates in one process's order: accepted
        assert "test/acc" in pkg.run(resume)


def test_pretrain_resume_under_another_process_count_is_refused(tmp_path):
    from episodes.train import run
    from tests.episodes.test_record import _cfg, _folder

    _folder(tmp_path / "data", [f"k{i:02d}" for i in range(12)])
    cfg = _cfg(tmp_path / "data", tmp_path / "run", learner="pretrain", pretrain_epochs=2, batch_size=4,
               stop_after=1, val_every_epochs=1)
    run(cfg)
    rec = read_json(Path(cfg.out) / runs.RECORD_FILE)
    rec["processes"]["world_size"] = 2
    (Path(cfg.out) / runs.RECORD_FILE).write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="--learner pretrain splits each batch"):
        run(dataclasses.replace(cfg, stop_after=0, resume=True))


# -- 4. a class folder that is a copy or a link of another ---------------------------------------------------------
def test_a_class_copied_under_another_name_into_another_split_is_refused(tmp_path):
    from episodes.data import load_imagefolder
    from tests.episodes.test_record import _folder

    _folder(tmp_path / "split" / "train", ["a", "b", "c"])
    _folder(tmp_path / "split" / "val", ["d", "e"], seed=1)
    _folder(tmp_path / "split" / "test", ["f"], seed=2)
    shutil.copytree(tmp_path / "split" / "train" / "b", tmp_path / "split" / "test" / "renamed")
    with pytest.raises(DataError, match=r"class folders .*train/b and .*test/renamed hold the same 3 images"):
        load_imagefolder(tmp_path / "split", 16, progress=False)
    # twice in one flat folder, as a link: refused before the classes are split
    _folder(tmp_path / "flat", [f"k{i:02d}" for i in range(8)])
    (tmp_path / "flat" / "zz").symlink_to(tmp_path / "flat" / "k03", target_is_directory=True)
    with pytest.raises(DataError, match=r"k03 and .*zz hold the same"):
        load_imagefolder(tmp_path / "flat", 16, class_split=(0.5, 0.25, 0.25), progress=False)
    # the same names and sizes with other pixels are other classes
    shutil.rmtree(tmp_path / "split" / "test" / "renamed")
    _folder(tmp_path / "split" / "test", ["renamed"], seed=9)
    load_imagefolder(tmp_path / "split", 16, progress=False, cache_dir=False)


def test_a_long_tail_test_class_linked_to_a_training_class_is_refused(tmp_path):
    from longtail.data import load_imagefolder
    from tests.longtail.synthetic import write_folder

    root = write_folder(tmp_path / "lt", 6, 6, seed=0)
    shutil.rmtree(root / "test" / "class2")
    (root / "test" / "class2").symlink_to(root / "train" / "class2", target_is_directory=True)
    with pytest.raises(DataError, match=r"train/class2 and .*test/class2 hold the same 6 images"):
        load_imagefolder(root, cache_dir=None)


def test_ctrl_c_while_loading_data_is_one_line_and_130(pkg, data, tmp_path, monkeypatch, capsys):
    cfg = pkg.cfg(data, tmp_path / "run")
    target = "episodes.recipe.load_splits_for" if pkg.name == "fewshot" else "longtail.recipe.load_data"

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    assert pkg.main(pkg.argv(cfg)) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        f"interrupted (SIGINT); no checkpoint was written; resume with: {pkg.command} --out {cfg.out} --resume"]


# -- a run says what it is doing ---------------------------------------------------------------------------------------


def test_a_run_writes_one_line_per_phase_with_its_duration_and_each_last_bar_line_once(pkg, data, tmp_path, capsys,
                                                                                       monkeypatch):
    """stderr of a tiny run whose bars write a line at every update (as when a unit outlasts the log interval):
    loading the data and the test open and close once, every validation opens and closes, each bar's 100% line is
    written once."""
    import re

    from fewshot_sla.progress import progress_bar

    monkeypatch.setattr(eng, "progress_bar", lambda *a, **kw: progress_bar(*a, **{**kw, "interval": 0.0}))
    cfg = pkg.cfg(data, tmp_path / "run", **({"eval_every": 1} if pkg.name == "longtail" else {}))
    capsys.readouterr()
    pkg.run(cfg)
    lines = capsys.readouterr().err.splitlines()

    def starts(name: str) -> list[str]:
        return [ln for ln in lines if ln.startswith(f"{name}: ") and ln.endswith(" ...")]

    def ends(name: str) -> list[str]:
        return [ln for ln in lines if re.fullmatch(rf"{name}: .* in [0-9]+\.[0-9] s( \(.*\))?", ln)]

    assert starts("data") == [f"data: loading imagefolder from {data} ..."], lines
    assert len(ends("data")) == 1 and " images (" in ends("data")[0], lines
    assert len(starts("test")) == 1 and len(ends("test")) == 1, lines
    validations = {"fewshot": ["step 2", "step 4"], "longtail": ["epoch 1", "epoch 2", "epoch 3"]}[pkg.name]
    assert [ln.rsplit(" after ", 1)[1] for ln in starts("validation")] == [f"{v} ..." for v in validations], lines
    assert len(ends("validation")) == len(validations), lines
    full = [ln.split(" elapsed ")[0] for ln in lines if "(100%)" in ln]
    assert len(full) == len(set(full)), full  # no bar writes its last line twice
    assert full.count(f"train ({pkg.unit}s): {pkg.units}/{pkg.units} (100%)") == 1, lines
    # in order: the data, then training (its validations inside), then the test
    order = [lines.index(starts("data")[0]), lines.index(starts("validation")[0]), lines.index(starts("test")[0])]
    assert order == sorted(order), lines
