"""fewshot_sla.progress: plain lines at a bounded rate in a log, tqdm on a terminal; the engine's bars in a log."""

from __future__ import annotations

import io
import sys

import torch
from torch import nn

from fewshot_sla import engine
from fewshot_sla.progress import LogBar, exclude, phase, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_log_bar_writes_a_line_per_interval_and_no_carriage_returns():
    out, clock = io.StringIO(), FakeClock()
    bar = LogBar(range(1000), desc="train (steps)", unit="step", file=out, interval=10, clock=clock)
    for i in bar:
        clock.t += 1.0  # one second per step
        if i == 500:
            bar.set_postfix(loss="0.123")
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text and text.endswith("\n")
    assert len(lines) == 100  # one per 10 s over 1000 s; the last one is the closing line, not written again
    assert lines[0] == "train (steps): 10/1000 (1%) elapsed 0:00:10, left 0:16:30, 1 s/step"
    assert lines[-1] == "train (steps): 1000/1000 (100%) elapsed 0:16:40, 1 s/step, loss=0.123"
    bar.close()  # closing twice writes nothing more
    assert out.getvalue() == text


def test_a_short_bar_that_does_not_stay_writes_nothing():
    out, clock = io.StringIO(), FakeClock()
    with LogBar(total=50, file=out, leave=False, interval=10, clock=clock) as bar:
        for _ in range(50):
            clock.t += 0.1
            bar.update()
    assert out.getvalue() == ""
    # a long one says where it is, and that it ended
    with LogBar(total=50, desc="decode", unit="img", file=out, leave=False, interval=10, clock=clock) as bar:
        for _ in range(50):
            clock.t += 0.5
            bar.update()
    assert out.getvalue().splitlines() == ["decode: 20/50 (40%) elapsed 0:00:10, left 0:00:15, 2 img/s",
                                           "decode: 40/50 (80%) elapsed 0:00:20, left 0:00:05, 2 img/s",
                                           "decode: 50/50 (100%) elapsed 0:00:25, 2 img/s"]
    disabled = io.StringIO()
    assert list(LogBar(range(3), file=disabled, disable=True, interval=0)) == [0, 1, 2] and disabled.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tqdm_on_a_terminal_plain_lines_elsewhere():
    from tqdm import tqdm

    tty = Terminal()
    with progress_bar(range(3), desc="x", file=tty) as bar:
        assert isinstance(bar, tqdm)
        list(bar)
    assert "\r" in tty.getvalue()  # a live bar redraws in place
    assert isinstance(progress_bar(range(3), file=io.StringIO()), LogBar)
    assert isinstance(progress_bar(range(3), file=tty, enabled=False), LogBar)  # disabled: silent, no tqdm


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(self.f(x), y)}


def test_a_fit_logged_to_a_file_writes_a_few_plain_lines(tmp_path, monkeypatch):
    """150 units of 4 batches each, with the outer and the inner bars on, stderr a file: no bar frames."""
    log = tmp_path / "stderr.log"
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2
    with open(log, "w") as f:
        monkeypatch.setattr(sys, "stderr", f)
        ctx = engine.setup(engine.RunSpec(str(tmp_path / "run"), device="cpu", progress=True))
        task = Linear()
        loop = engine.Loop(units=150, batches=lambda u: [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)],
                           lr=lambda u: 0.1, checkpoint_every=0, inner_progress=True, batches_per_unit=4)
        engine.fit(task, torch.optim.SGD(task.parameters(), lr=0.1), loop, ctx)
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3, lines  # the closing line, and one per 30 s at most (this fit takes seconds)
    assert lines[-1].startswith("train (epochs): 150/150 (100%) elapsed") and "loss=" in lines[-1]


def test_time_kept_out_of_a_bar_is_not_in_its_rate_nor_its_elapsed_time():
    out, clock = io.StringIO(), FakeClock()
    bar = LogBar(range(10), desc="train (steps)", unit="step", file=out, interval=1000, clock=clock)
    for i in bar:
        clock.t += 2.0  # two seconds per step
        if i == 4:  # then a validation of 100 s
            clock.t += 100.0
            exclude(bar, 100.0)
    assert out.getvalue().splitlines() == ["train (steps): 10/10 (100%) elapsed 0:00:20, 2 s/step"]


def test_time_kept_out_of_a_tqdm_bar_is_not_in_its_rate():
    from tqdm import tqdm

    bar = tqdm(total=10, file=io.StringIO(), mininterval=0, smoothing=0)
    bar.start_t -= 120.0  # as if 10 steps of 2 s and a validation of 100 s had gone by
    bar.last_print_t -= 120.0
    exclude(bar, 100.0)
    bar.update(10)
    assert abs(bar.format_dict["elapsed"] - 20.0) < 1.0  # its average rate: 10 steps in 20 s, not in 120 s
    bar.close()


def test_a_phase_writes_its_start_and_its_duration():
    out, clock = io.StringIO(), FakeClock()
    with phase("data", "decoding 25,600 images of tiny-imagenet from DIR", file=out, clock=clock) as p:
        clock.t += 12.34
        p.result, p.note = "25,600 images", "cached: DIR/.fewshot_sla_cache"
    assert abs(p.seconds - 12.34) < 1e-9
    assert out.getvalue().splitlines() == ["data: decoding 25,600 images of tiny-imagenet from DIR ...",
                                           "data: 25,600 images in 12.3 s (cached: DIR/.fewshot_sla_cache)"]
    quiet = io.StringIO()
    with phase("test", "x", enabled=False, file=quiet, clock=clock) as p:
        clock.t += 1.0
    assert quiet.getvalue() == "" and p.seconds == 1.0


def test_a_slow_validation_is_reported_apart_and_left_out_of_the_step_rate(tmp_path, monkeypatch, capsys):
    """A bar line at every unit (as when each unit takes longer than the log interval): the 100% line is written
    once, each validation says what it evaluates and how long it took, and the s/step is the training's."""
    import re
    import time

    monkeypatch.setattr(engine, "progress_bar", lambda *a, **kw: progress_bar(*a, **{**kw, "interval": 0.0}))
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2

    def validate(task: nn.Module) -> dict[str, float]:
        time.sleep(1.0)
        return {"val/acc": 0.5}

    ctx = engine.setup(engine.RunSpec(str(tmp_path / "run"), device="cpu", progress=True))
    task = Linear()
    loop = engine.Loop(units=4, batches=lambda u: [(x, y)], lr=lambda u: 0.1, checkpoint_every=0, evaluate=validate,
                       eval_what="3 episodes", eval_every=2, unit_name="step")
    capsys.readouterr()
    engine.fit(task, torch.optim.SGD(task.parameters(), lr=0.1), loop, ctx)
    lines = capsys.readouterr().err.splitlines()
    assert [ln for ln in lines if ln.startswith("validation: 3")] == ["validation: 3 episodes after step 2 ...",
                                                                      "validation: 3 episodes after step 4 ..."]
    took = [float(m.group(1)) for ln in lines if (m := re.fullmatch(r"validation: done in ([0-9.]+) s", ln))]
    assert len(took) == 2 and all(t >= 1.0 for t in took), lines
    last = [ln for ln in lines if "(100%)" in ln]
    assert len(last) == 1 and last[0] == lines[-1], lines
    rate = re.search(r", ([0-9.e+-]+) (s/step|step/s)", last[0])
    assert rate is not None, last
    per_step = float(rate.group(1)) if rate.group(2) == "s/step" else 1 / float(rate.group(1))
    assert per_step < 0.25, last  # 2 s of validation over 4 steps would be >= 0.5 s/step
