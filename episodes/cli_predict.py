"""``sla-fewshot-predict``: load a trained ``sla-fewshot`` run and classify query images against a support set.

    sla-fewshot-predict --run runs/omni_5w1s_sla --support SUPPORT --query QUERY --out predictions.csv

``SUPPORT/<class>/*.png`` is the support set (one folder per class, any number of images each). ``QUERY`` is a
flat folder of images, or a folder of class folders (then the accuracy is printed too). Writes a CSV
``file,predicted_class,softmax`` (``file`` relative to ``QUERY``; ``softmax`` is the largest entry of the softmax of
the learner's logits, uncalibrated, not a probability of being right) and prints a short table. In Python, use
:func:`episodes.load_run` (:mod:`episodes.predict`).
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from collections import Counter
from pathlib import Path

from fewshot_sla.config import ConfigError

from .config import MODES

# torch and the modules that use it (fewshot_sla.io's IMAGE_SUFFIXES, the files taken as images, DataError,
# episodes.predict) are imported inside the functions that need them: --help answers without loading them.

__all__ = ["SOFTMAX_NOTE", "main", "query_folder", "support_folder"]

#: What the ``softmax`` column is (printed under the table): an episodic learner's logits (negative distances, a
#: ridge or SVM head's outputs) carry no temperature fitted to accuracy, so the softmax saturates near 1 on most
#: queries whether they are right or wrong.
SOFTMAX_NOTE = ("softmax: of the learner's logits over the support classes, uncalibrated -- it ranks the classes of "
                "one query; it is not the probability of being right")


def _is_image(p: Path) -> bool:
    from fewshot_sla.io import IMAGE_SUFFIXES

    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _subfolders(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if _is_image(p))


def support_folder(d: Path) -> tuple[list[Path], list[str]]:
    """``d/<class>/*`` -> (image files, class names), classes and files sorted by name."""
    from fewshot_sla.io import IMAGE_SUFFIXES
    from fewshot_sla.utils import DataError

    if not d.is_dir():
        raise DataError(f"support folder {str(d)!r} does not exist; pass a folder holding one folder per class")
    files: list[Path] = []
    labels: list[str] = []
    empty = []
    for c in _subfolders(d):
        imgs = _images_in(c)
        if not imgs:
            empty.append(c.name)
        files += imgs
        labels += [c.name] * len(imgs)
    if not files:
        raise DataError(
            f"support folder {d} holds no class folders with images; expected {d}/<class>/*.png (one folder per "
            f"class, image types {', '.join(IMAGE_SUFFIXES)})"
        )
    if empty:
        raise DataError(
            f"support class folder(s) {', '.join(empty[:5])} under {d} hold no images; add images or remove them"
        )
    loose = _images_in(d)
    if loose:
        warnings.warn(f"ignoring {len(loose)} image(s) directly in {d}: a support image needs a class folder",
                      stacklevel=2)
    return files, labels


def query_folder(d: Path) -> tuple[list[Path], list[str | None]]:
    """A flat folder of images (labels None) and/or class folders ``d/<class>/*`` (labels = folder names)."""
    from fewshot_sla.io import IMAGE_SUFFIXES
    from fewshot_sla.utils import DataError

    if not d.is_dir():
        raise DataError(f"query folder {str(d)!r} does not exist; pass a folder of images (or of class folders)")
    files: list[Path] = _images_in(d)
    labels: list[str | None] = [None] * len(files)
    for c in _subfolders(d):
        imgs = _images_in(c)
        files += imgs
        labels += [c.name] * len(imgs)
    if not files:
        raise DataError(f"query folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}), nor class folders of them")
    return files, labels


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sla-fewshot-predict",
        description="Classify query images against a support set with a trained sla-fewshot run.",
    )
    ap.add_argument("--run", required=True, metavar="RUN_DIR", help="the --out folder of a sla-fewshot run")
    ap.add_argument("--support", required=True, metavar="DIR", help="support set: DIR/<class>/*.png, any shots")
    ap.add_argument("--query", required=True, metavar="DIR",
                    help="query images: a flat folder, or DIR/<class>/* (then the accuracy is printed)")
    ap.add_argument("--out", default="predictions.csv", metavar="CSV",
                    help="where to write file,predicted_class,softmax (default: predictions.csv)")
    ap.add_argument("--mode", choices=MODES, default="aggregated",
                    help="aggregated = SLA+AG, single = SLA+SI (default: aggregated)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    ap.add_argument("--num-threads", type=int, default=0, metavar="N",
                    help="torch CPU threads; 0 = auto: the cores other processes leave free (default: 0)")
    return ap


def _run(args: argparse.Namespace) -> None:
    from fewshot_sla.threads import apply_threads

    from .predict import load_run

    apply_threads(args.num_threads)  # before the network is built: the one thread policy of every entry point
    support_dir, query_dir = Path(args.support), Path(args.query)
    s_files, s_labels = support_folder(support_dir)
    q_files, q_labels = query_folder(query_dir)
    predictor = load_run(args.run, args.device)
    probs = predictor.predict(s_files, s_labels, q_files, args.mode)
    score, idx = probs.max(dim=1)
    predicted = [str(predictor.classes[i]) for i in idx.tolist()]
    names = [p.relative_to(query_dir).as_posix() for p in q_files]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "predicted_class", "softmax"])
        w.writerows([n, c, f"{s:.6f}"] for n, c, s in zip(names, predicted, score.tolist()))

    from fewshot_sla.tracking import format_table

    lo, hi = min(Counter(s_labels).values()), max(Counter(s_labels).values())
    shot_text = str(lo) if lo == hi else f"{lo}-{hi}"
    print(f"run {args.run}: {predictor.cfg.learner}/{predictor.cfg.backbone}, transform {predictor.cfg.transform} "
          f"(M={predictor.task.m}), weights {predictor.weights.name}, mode {args.mode}")
    print(f"support: {len(predictor.classes)} classes x {shot_text} shot{'' if hi == 1 else 's'}; "
          f"query: {len(q_files)} images")
    show = 10
    rows = [{"file": n, "predicted_class": c, "softmax": f"{s:.4f}"}
            for n, c, s in zip(names[:show], predicted, score.tolist())]
    print(format_table(rows))
    print(SOFTMAX_NOTE)
    if len(names) > show:
        print(f"... {len(names) - show} more rows in {out}")
    else:
        print(f"written to {out}")
    labelled = [(t, p) for t, p in zip(q_labels, predicted) if t is not None]
    if labelled:
        unknown = sorted({t for t, _ in labelled} - set(s_labels))
        if unknown:
            print(f"note: query class(es) {', '.join(unknown[:5])} are not support classes: counted as wrong",
                  file=sys.stderr)
        hits = sum(t == p for t, p in labelled)
        print(f"accuracy: {100 * hits / len(labelled):.2f}% ({hits}/{len(labelled)} query images in class folders)")


def main(argv: list[str] | None = None) -> int:
    """``sla-fewshot-predict``; returns the exit status (2 with a message on stderr for a bad input)."""
    args = _parser().parse_args(argv)
    from fewshot_sla.utils import DataError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)  # ours (e.g. no best.pt) on every call, not once a process
            try:
                _run(args)
            finally:
                for w in caught:  # one plain line each, not the file:line form of the warnings module
                    print(f"warning: {w.message}", file=sys.stderr)
    except (DataError, ValueError, ConfigError, ImportError, OSError) as e:  # ImportError: qpth ([svm])
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
