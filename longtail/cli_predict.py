"""``sla-longtail-predict``: load a trained ``sla-longtail`` run and classify images.

    sla-longtail-predict --run runs/c10_ldam_sla IMAGE_OR_DIR... --out predictions.csv

Each argument is an image file or a folder (searched recursively for ``.png``, ``.jpg``, ``.jpeg``). Writes a CSV
``file,predicted_class,softmax`` and prints a short table; images inside folders named after the run's classes (an
ImageFolder split, ``DIR/<class>/*.png``) are also scored against that class and the accuracy is printed. In
Python, use :func:`longtail.load_run` (:mod:`longtail.predict`).
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from fewshot_sla.config import ConfigError

# torch and the modules that use it (longtail.data's IMAGE_EXTENSIONS, DataError, longtail.predict) are imported
# inside the functions that need them: --help answers without loading them.

__all__ = ["SOFTMAX_NOTE", "collect_images", "main"]

#: What the ``softmax`` column is (printed under the table): the softmax of the trained logits (times the loss's
#: scale, 30 for LDAM's cosine head), with no temperature fitted on held-out data.
SOFTMAX_NOTE = ("softmax: of the model's logits over the classes as the loss scaled them, uncalibrated -- it ranks "
                "the classes of one image; it is not the probability of being right")


def _is_image(p: Path) -> bool:
    from .data import IMAGE_EXTENSIONS

    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def collect_images(args: Sequence[str]) -> list[Path]:
    """Image files of the arguments: files as given, folders searched recursively (sorted; hidden entries and the
    loaders' ``.fewshot_sla_cache`` skipped)."""
    from fewshot_sla.utils import DataError

    from .data import IMAGE_EXTENSIONS

    files: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if _is_image(f) and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise DataError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}), nor subfolders of them")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{a}: no such image file or folder")
    return files


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sla-longtail-predict", description="Classify images with a trained "
                                 "sla-longtail run.")
    ap.add_argument("--run", required=True, metavar="RUN_DIR", help="the --out folder of one sla-longtail run")
    ap.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (searched recursively)")
    ap.add_argument("--out", default="predictions.csv", metavar="CSV",
                    help="where to write file,predicted_class,softmax (default: predictions.csv)")
    ap.add_argument("--mode", choices=("distilled", "aggregated", "single"), default=None,
                    help="prediction mode (default: the run's headline mode)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    ap.add_argument("--num-threads", type=int, default=0, metavar="N",
                    help="torch CPU threads; 0 = auto: the cores other processes leave free (default: 0)")
    return ap


def _run(args: argparse.Namespace) -> None:
    from fewshot_sla.threads import apply_threads

    from .predict import load_run

    apply_threads(args.num_threads)  # before the network is built: the one thread policy of every entry point
    files = collect_images(args.images)
    predictor = load_run(args.run, args.device)
    mode = args.mode or predictor.main_mode
    probs = predictor.predict(files, mode)
    score, idx = probs.max(dim=1)
    predicted = [predictor.classes[i] for i in idx.tolist()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "predicted_class", "softmax"])
        w.writerows([str(p), c, f"{s:.6f}"] for p, c, s in zip(files, predicted, score.tolist()))

    from fewshot_sla.tracking import format_table

    c = predictor.cfg
    print(f"run {args.run}: {c.backbone}, {c.loss}{'+DRW' if c.drw else ''}, transform {c.transform}"
          f"{' +SD' if c.sd else ''}, {len(predictor.classes)} classes, mode {mode}; {len(files)} image"
          f"{'' if len(files) == 1 else 's'}")
    show = 10
    rows = [{"file": str(p), "predicted_class": c, "softmax": f"{s:.4f}"}
            for p, c, s in zip(files[:show], predicted, score.tolist())]
    print(format_table(rows))
    print(SOFTMAX_NOTE)
    print(f"... {len(files) - show} more rows in {out}" if len(files) > show else f"written to {out}")
    known = set(predictor.classes)
    labelled = [(p.parent.name, c) for p, c in zip(files, predicted) if p.parent.name in known]
    if labelled:
        hits = sum(t == c for t, c in labelled)
        print(f"accuracy: {100 * hits / len(labelled):.2f}% ({hits}/{len(labelled)} images in folders named after "
              "a class)")


def main(argv: list[str] | None = None) -> int:
    """``sla-longtail-predict``; returns the exit status (2 with a message on stderr for a bad input)."""
    args = _parser().parse_args(argv)
    from fewshot_sla.utils import DataError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)  # ours (e.g. an unfinished run) on every call
            try:
                _run(args)
            finally:
                for w in caught:  # one plain line each, not the file:line form of the warnings module
                    print(f"warning: {w.message}", file=sys.stderr)
    except (DataError, ValueError, ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
