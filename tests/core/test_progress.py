"""fewshot_sla.progress: plain lines at a bounded rate in a log, tqdm on a terminal; the engine's bars in a log."""

from __future__ import annotations

import io
import sys

import torch
from torch import nn

from fewshot_sla import engine
from fewshot_sla.progress import LogBar, progress_bar


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
    assert len(lines) == 100 + 1  # one per 10 s over 1000 s, and the closing line
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
