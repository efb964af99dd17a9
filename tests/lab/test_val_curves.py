"""lab/val_curves.py: the validation curve read from a run's history.jsonl (SLA+AG where there is SLA)."""

import json

import pytest

from lab.val_curves import curve, main


def test_curve_reads_the_validated_units_in_percent(tmp_path):
    rows = [{"epoch": 1.0, "step": 1}, {"epoch": 2.0, "step": 2, "val/acc_agg": 0.4, "val/acc_single": 0.3},
            {"epoch": 3.0, "step": 3}, {"epoch": 4.0, "step": 4, "val/acc_agg": 0.455, "val/acc_single": 0.41}]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    unit, x, y = curve(tmp_path)
    assert unit == "epoch" and x == [2.0, 4.0] and y == pytest.approx([40.0, 45.5])


def test_episodic_runs_are_per_step_and_a_run_without_validation_is_named(tmp_path, capsys):
    ep = tmp_path / "ep"
    ep.mkdir()
    (ep / "history.jsonl").write_text(json.dumps({"step": 500, "val/acc": 0.25}) + "\n")
    assert curve(ep) == ("step", [500.0], [25.0])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "history.jsonl").write_text(json.dumps({"step": 1, "train/loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="no validation accuracy"):
        curve(empty)
    pytest.importorskip("matplotlib")
    assert main([str(ep), str(empty), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0 and "skipped" in capsys.readouterr().err
