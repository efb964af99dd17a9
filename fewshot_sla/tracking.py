"""One metrics dict, many sinks: the console, ``OUT/metrics.json`` (+ ``history.jsonl``) and W&B.

W&B is optional and offline by default: ``mode="offline"`` writes a local run under
``OUT/wandb/`` (``wandb sync`` uploads it later), ``"online"`` needs a login the user made,
``"disabled"`` skips it. wandb is imported only here and only when a run is asked for; any W&B
failure prints a warning and training goes on.

Offline means offline: unless the effective mode is ``"online"``, W&B's error reporting (Sentry,
which looks up its server's host name and connects to it when W&B's service reports something)
is switched off with ``WANDB_ERROR_REPORTING=false``, unless the user set that variable.
W&B's staging, cache and artifact folders (``WANDB_DATA_DIR``, ``WANDB_CACHE_DIR``,
``WANDB_ARTIFACT_DIR``) are ``OUT/wandb/.data``, ``.cache`` and ``.artifacts`` instead of the home
folder, so everything an offline run references (e.g. the files of its Tables) stays in ``OUT``
and ``wandb sync OUT/wandb/offline-run-*`` works from another machine. These are process-wide
environment variables: :class:`RunLogger` sets them for its run only and restores the previous
values in :meth:`RunLogger.finish` (a process may run a grid of runs, one folder each). W&B
starts its service process once per Python process, so the error-reporting setting of the first
W&B run of a process holds for its later runs too (its service log stays in that run's ``.cache``).

Runs of one method share a W&B ``group`` so W&B can average them: the caller passes the ``group`` of its run
record (:func:`fewshot_sla.runs.group_id` of the run's identity, the same name ``sla-report`` groups by).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runs import group_id, identity
from .utils import atomic_write_text, json_dumps, provenance, write_json

__all__ = ["RunLogger", "WANDB_MODES", "format_table"]

WANDB_MODES = ("offline", "online", "disabled")


def _wandb_env(mode: str, out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Environment for a W&B run in ``mode``: ``(always, defaults)``, the variables to set and
    those to set only where the user has not."""
    base = out.resolve() / "wandb"
    always = {
        # Table/artifact staging (default ~/.local/share/wandb): offline runs reference these files,
        # so they must travel with OUT for `wandb sync` on another machine.
        "WANDB_DATA_DIR": str(base / ".data"),
        "WANDB_CACHE_DIR": str(base / ".cache"),  # artifact cache (default ~/.cache/wandb)
        "WANDB_ARTIFACT_DIR": str(base / ".artifacts"),  # downloaded artifacts (default ./artifacts)
    }
    defaults = {"WANDB_SILENT": "true"}
    if mode != "online":
        # W&B's service reports its errors to Sentry (a DNS lookup, then HTTPS): not in offline runs.
        # Read when the service process starts (it gets --no-observability), once per process.
        defaults["WANDB_ERROR_REPORTING"] = "false"
    return always, defaults


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table (markdown pipe syntax) of ``rows``."""
    cols = list(columns or (rows[0].keys() if rows else []))
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    """Print ``line`` to stderr once per process (not a warning per run)."""
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr)


class RunLogger:
    """Logs the same numbers to the console, ``OUT/metrics.json`` and (optionally) W&B.

    Args:
        out: the run folder.
        config: the resolved config (a dict), saved in ``metrics.json`` and the W&B config.
        wandb_mode: ``"offline"`` (default), ``"online"`` or ``"disabled"``; the ``WANDB_MODE``
            environment variable, when set, wins (tests force ``offline``/``disabled``).
        project / name: W&B run identifiers.
        group: the W&B group: the run record's ``group`` (:func:`fewshot_sla.runs.group_id` of the run's
            identity, which leaves out the package's non-method keys and names the data). Without it,
            ``group_id(identity(config, (), {}))``: the config without :data:`fewshot_sla.runs.RUN_KEYS` (runs
            differing only in seed, output folder, device, ... share it); none without a config.
        enabled: False on non-zero distributed ranks: nothing is written or logged.
        quiet: do not print scalars to the console.
    """

    def __init__(
        self,
        out: str | Path,
        config: dict[str, Any] | None = None,
        wandb_mode: str = "offline",
        project: str = "fewshot-sla",
        name: str | None = None,
        group: str | None = None,
        enabled: bool = True,
        quiet: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if wandb_mode not in WANDB_MODES:
            raise ValueError(f"unknown W&B mode {wandb_mode!r}; choose one of {', '.join(WANDB_MODES)}")
        self.out = Path(out)
        self.config = dict(config or {})
        self.enabled = enabled
        self.quiet = quiet
        self.summary: dict[str, Any] = {}
        self.meta: dict[str, Any] = {**provenance(), **(extra or {})}
        self.run: Any = None
        self._saved_env: dict[str, str | None] = {}  # environment to restore in finish()
        self.group = group_id(identity(self.config, (), {})) if group is None and self.config else group
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE", wandb_mode)
        if mode not in WANDB_MODES:
            mode = wandb_mode
        self.wandb_mode = mode
        if mode != "disabled":
            self._start_wandb(mode, project, name, self.group)

    # -- W&B -------------------------------------------------------------------------------
    def _start_wandb(self, mode: str, project: str, name: str | None, group: str | None) -> None:
        try:
            import wandb
        except ImportError:
            _say_once(
                "W&B: wandb is not installed, so nothing is logged to W&B; the run's metrics go to its folder "
                "(metrics.json, CSVs). pip install 'fewshot-sla[wandb]' to log them to W&B too"
            )
            return
        always, defaults = _wandb_env(mode, self.out)
        self._set_env(always, defaults)
        try:
            self.run = wandb.init(
                mode=mode,  # type: ignore[arg-type]
                dir=str(self.out),
                project=project,
                name=name,
                group=group,
                config={**self.config, **self.meta},
                reinit="finish_previous",
            )
        except Exception as e:  # W&B must never stop training
            warnings.warn(f"W&B init failed ({type(e).__name__}: {e}); logging to metrics.json only", stacklevel=3)
            self.run = None
            self._restore_env()

    def _set_env(self, always: dict[str, str], defaults: dict[str, str]) -> None:
        """Set ``always`` and the ``defaults`` the user has not set, remembering the previous values."""
        todo = {**{k: v for k, v in defaults.items() if k not in os.environ}, **always}
        for k, v in todo.items():
            self._saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def _restore_env(self) -> None:
        """Put back the environment variables :meth:`_set_env` changed (unset ones are removed)."""
        for k, prev in self._saved_env.items():
            if prev is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = prev
        self._saved_env = {}

    def _wandb(self, fn_name: str, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            getattr(self.run, fn_name)(*args, **kwargs)
        except Exception as e:
            warnings.warn(f"W&B {fn_name} failed ({type(e).__name__}: {e}); continuing", stacklevel=3)

    @property
    def wandb_dir(self) -> Path | None:
        """The local run folder (``.../wandb/offline-run-*``), or None without W&B."""
        return Path(self.run.dir).parent if self.run is not None else None

    # -- sinks -----------------------------------------------------------------------------
    def truncate_history(self, last_step: int) -> None:
        """Drop ``history.jsonl`` rows logged after ``last_step``: a resumed run logs them again."""
        path = self.out / "history.jsonl"
        if not self.enabled or not path.is_file():
            return
        import json

        keep = [ln for ln in path.read_text().splitlines() if ln and (json.loads(ln).get("step") or 0) <= last_step]
        atomic_write_text("".join(k + "\n" for k in keep), path)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Scalars (and short lists) for one step: console line, ``history.jsonl`` and W&B."""
        if not self.enabled:
            return
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}
        if not self.quiet and scalars:
            msg = "  ".join(f"{k}={_fmt(float(v))}" for k, v in scalars.items())
            print(f"[step {step}] {msg}" if step is not None else msg, file=sys.stderr)
        with open(self.out / "history.jsonl", "a") as f:
            # strict JSON: a NaN loss is written as null, not as the non-JSON literal NaN
            f.write(json_dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._wandb("log", {k: float(v) for k, v in scalars.items()}, step=step)

    def log_per_class(
        self,
        key: str,
        per_class_acc: Sequence[float],
        class_names: Sequence[str] | None = None,
        train_counts: Sequence[int] | None = None,
        step: int | None = None,
    ) -> None:
        """A per-class accuracy ``wandb.Table`` (class, name, accuracy[, train count]) and a bar chart."""
        if not self.enabled or self.run is None:
            return
        try:
            import wandb

            names = list(class_names) if class_names is not None else [str(i) for i in range(len(per_class_acc))]
            cols = ["class", "name", "accuracy"] + (["train_count"] if train_counts is not None else [])
            rows = [
                [i, names[i], float(a)] + ([int(train_counts[i])] if train_counts is not None else [])
                for i, a in enumerate(per_class_acc)
            ]
            table = wandb.Table(columns=list[Any](cols), data=rows)
            self.run.log({key: table, f"{key}_bar": wandb.plot.bar(table, "name", "accuracy", title=key)}, step=step)
        except Exception as e:
            warnings.warn(f"W&B per-class table failed ({type(e).__name__}: {e}); continuing", stacklevel=2)

    def log_confusion(
        self,
        key: str,
        y_true: Sequence[int],
        y_pred: Sequence[int],
        class_names: Sequence[str],
        step: int | None = None,
    ) -> None:
        """A W&B confusion-matrix plot."""
        if not self.enabled or self.run is None:
            return
        try:
            import wandb

            cm = wandb.plot.confusion_matrix(
                y_true=list(map(int, y_true)), preds=list(map(int, y_pred)), class_names=list(class_names), title=key
            )
            self.run.log({key: cm}, step=step)
        except Exception as e:
            warnings.warn(f"W&B confusion matrix failed ({type(e).__name__}: {e}); continuing", stacklevel=2)

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None
    ) -> None:
        """Any ``wandb.Table`` (e.g. per-episode loss and accuracy)."""
        if not self.enabled or self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)
        except Exception as e:
            warnings.warn(f"W&B table {key} failed ({type(e).__name__}: {e}); continuing", stacklevel=2)

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        """A saved plot (PNG) as a W&B image."""
        if not self.enabled or self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Image(str(path))}, step=step)
        except Exception as e:
            warnings.warn(f"W&B image {key} failed ({type(e).__name__}: {e}); continuing", stacklevel=2)

    def finish(self, metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path | None:
        """Write ``OUT/metrics.json`` (metrics + config + seed + git commit + ``extra``), put the
        scalars in the W&B summary, save metrics.json into the W&B run, and close the run."""
        if not self.enabled:
            return None
        self.summary.update(metrics)
        record = {**metrics, "config": self.config, **self.meta, **(extra or {})}
        path = self.out / "metrics.json"
        write_json(record, path)
        if self.run is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float, np.floating, np.integer)):
                    self._wandb_summary(k, float(v))
            self._wandb("save", str(path), base_path=str(self.out), policy="now")
            self._wandb("finish")
        self._restore_env()
        return path

    def _wandb_summary(self, key: str, value: float) -> None:
        try:
            self.run.summary[key] = value
        except Exception as e:
            warnings.warn(f"W&B summary failed ({type(e).__name__}: {e}); continuing", stacklevel=3)

    def write_text(self, name: str, text: str) -> None:
        if self.enabled:
            atomic_write_text(text, self.out / name)
