"""Load a trained ``sla-longtail`` run and classify images (``sla-longtail-predict``'s command line is
:mod:`longtail.cli_predict`).

:func:`load_run` rebuilds the run's model exactly as ``sla-longtail`` built it, from the run record
``recipe.json`` (the recorded normalisation statistics, classes, class counts and image side: never the data
folder's current state, so a folder that gained classes or files since changes nothing), and loads its final
weights (``checkpoint.pt``, the weights the run was tested with)::

    predictor = longtail.load_run("runs/c10_ldam_sla")
    scores = predictor.predict(["cat.png", "ship.png"])      # (2, 10) softmax, columns = predictor.classes
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import torch
from torch import Tensor

from fewshot_sla import SLAClassifier, checkpoint, lifecycle, runs
from fewshot_sla.config import ConfigError, load_config
from fewshot_sla.io import class_folders, decode_images, image_files
from fewshot_sla.utils import DataError, inference_batches, read_json

from .config import LTConfig
from .data import CIFAR_MEAN, CIFAR_STD
from .reporting import LEGACY_DEFAULTS

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from .recipe import Recipe

__all__ = ["LongTailPredictor", "load_run", "CIFAR_SIZE"]

#: The image side of CIFAR runs (and of image-folder runs whose training images cannot be looked at).
CIFAR_SIZE = 32

ImageFile: TypeAlias = "str | Path | PILImage.Image"
#: What ``predict`` takes as images: one path or PIL image, a list of them, or a uint8 tensor (B, 3, H, W).
Images: TypeAlias = "Tensor | ImageFile | Sequence[ImageFile]"


def _resize_rgb(a: np.ndarray, size: int) -> np.ndarray:
    """``(3, H, W)`` uint8 -> ``(3, size, size)`` with PIL's BILINEAR (antialiased), the filter
    :func:`fewshot_sla.io.decode_images` resizes RGB files with."""
    from PIL import Image

    if a.shape[1:] == (size, size):
        return a
    im = Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


class LongTailPredictor:
    """A trained ``sla-longtail`` model with the run's preprocessing (built by :func:`load_run`).

    Images may be file paths, PIL images, a list mixing both, or a uint8 tensor ``(B, 3, H, W)`` of raw pixels,
    of any size: each is made RGB (files decoded as the long-tail loader decodes them), resized to the run's side
    (PIL's BILINEAR when the size differs) and normalised with the run's recorded statistics
    (:meth:`longtail.recipe.Recipe.normalize`).

    Attributes:
        model: the :class:`fewshot_sla.SLAClassifier` in eval mode, on ``device``.
        recipe: the run's :class:`longtail.recipe.Recipe` (from its record).
        cfg: the run's :class:`longtail.config.LTConfig`.
        classes: the class names, index = column of :meth:`predict`.
        counts: the training images per class.
        image_size: the side images are resized to.
        stats: the ``(mean, std)`` per channel images are normalised with.
        main_mode: the run's headline prediction mode (distilled > aggregated > single), :meth:`predict`'s default.
        device: where the network runs.
        weights: the checkpoint file loaded.
    """

    def __init__(
        self, model: SLAClassifier, recipe: Recipe, main_mode: str, device: torch.device, weights: Path,
    ) -> None:
        self.model = model.to(device).eval()
        self.recipe = recipe
        self.cfg = recipe.cfg
        self.classes, self.counts = list(recipe.class_names), list(recipe.counts)
        self.image_size = recipe.image_size
        self.stats = recipe.stats
        self.main_mode = main_mode
        self.device = device
        self.weights = weights

    @property
    def modes(self) -> tuple[str, ...]:
        """The prediction modes the model has (``single``; ``aggregated`` with SLA; ``distilled`` with ``--sd``)."""
        return self.model.modes()

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"LongTailPredictor({c.backbone}, {c.loss}{'+DRW' if c.drw else ''}, transform {c.transform!r}"
            f"{' +SD' if c.sd else ''}, {len(self.classes)} classes, modes {', '.join(self.modes)}, "
            f"weights {self.weights})"
        )

    def load_images(self, images: Images) -> Tensor:
        """Images in any accepted form -> uint8 ``(B, 3, S, S)`` on the CPU.

        Raises:
            ValueError / TypeError: no images, a tensor of the wrong kind, or an item of an unknown kind;
            DataError: a file cannot be read.
        """
        s = self.image_size
        if isinstance(images, Tensor):
            x = images
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(
                    f"a tensor of images must be uint8 RGB pixels (B, 3, H, W), got {x.dtype} of shape "
                    f"{tuple(x.shape)}; for one image use x.unsqueeze(0), for grey ones x.expand(-1, 3, -1, -1)"
                )
            if not len(x):
                raise ValueError("no images given")
            x = x.detach().cpu()
            if x.shape[-2:] == (s, s):
                return x.contiguous()
            return torch.from_numpy(np.stack([_resize_rgb(a, s) for a in x.numpy()])).contiguous()
        from PIL import Image

        items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
        arrays = []
        for i, item in enumerate(items):
            if isinstance(item, (str, Path)):
                # one at a time: files of different sizes cannot share a decode_images call without a resize,
                # and the long-tail loader decodes at the files' own size (torchvision's decoders)
                a = decode_images([Path(item)], "RGB", progress=False, workers=1,
                                  fix="replace the file or leave it out")[0]
            elif isinstance(item, Image.Image):
                a = np.asarray(item.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
            else:
                raise TypeError(
                    f"image {i} is a {type(item).__name__}; give file paths, PIL images or one uint8 tensor "
                    "(B, 3, H, W)"
                )
            arrays.append(_resize_rgb(a, s))
        if not arrays:
            raise ValueError("no images given")
        # contiguous (NCHW) whatever the arrays' strides: a channels-last batch would take other conv kernels, whose
        # float sums differ in the last bits, and the same image would not score the same in every form
        return torch.from_numpy(np.stack(arrays)).contiguous()

    def logit_scale(self, mode: str) -> float:
        """The factor the run's loss multiplied ``mode``'s logits by before its softmax (LDAM's cosine head: its
        ``s`` = 30; every other loss: 1)."""
        crit = self.model.sd_criterion if mode == "distilled" else self.model.criterion
        return float(getattr(crit, "logit_scale", 1.0))

    @torch.no_grad()
    def predict(self, images: Images, mode: str | None = None, batch_size: int = 0) -> Tensor:
        """Class scores of ``images``: the softmax of the model's scaled logits, uncalibrated (no temperature was
        fitted on held-out data, so it is not a probability of being right; its argmax is the prediction).

        Args:
            images: see the class docstring; ``B`` images.
            mode: ``"distilled"`` (SLA+SD head, runs trained with ``--sd``), ``"aggregated"`` (SLA+AG: the joint
                logits of the ``M`` transformed copies averaged) or ``"single"`` (SLA+SI: the untransformed copy);
                None = :attr:`main_mode`, the run's headline mode.
            batch_size: inputs per forward pass (``"aggregated"``: ``batch_size // M`` images' ``M`` copies); 0 =
                the run's test evaluation's (``--eval-batch``, by default per device:
                :func:`longtail.recipe.eval_batch_size`). It sets the speed, not the scores.

        Returns:
            ``(B, C)`` float32 scores on the CPU, rows summing to 1: ``softmax(s * logits)`` with ``s`` =
            :meth:`logit_scale` (the scale the head was trained at), columns in :attr:`classes` order. Their
            argmax is the run's prediction.

        Raises:
            ValueError: a mode the model does not have, or bad images; DataError: an unreadable file.
        """
        mode = self.main_mode if mode is None else mode
        if mode not in self.modes:
            need = {"distilled": "trained with --sd", "aggregated": "trained with a --transform other than none"}
            raise ValueError(
                f"mode {mode!r} is not available: this run's model has modes {', '.join(self.modes)}"
                + (f" (mode {mode!r} needs a run {need[mode]})" if mode in need else "")
            )
        from .recipe import eval_batch_size  # here: `import longtail` stays light

        x = self.load_images(images)
        scale = self.logit_scale(mode)
        copies = self.model.m if mode == "aggregated" else 1
        batch = eval_batch_size(batch_size or self.cfg.eval_batch, self.device, copies)
        out = []
        for rows in inference_batches(len(x), batch):  # the batching of the run's test evaluation
            chunk = x[rows]
            n = len(chunk)
            if n == 1:  # a single image: scored as in a batch (see inference_batches), then kept alone
                chunk = chunk.expand(2, *chunk.shape[1:])
            z = self.model.predict(self.recipe.normalize(chunk.to(self.device)), mode)[:n]
            out.append(torch.softmax(scale * z.float(), dim=1).cpu())
        return torch.cat(out)


def _train_image_size(cfg: LTConfig) -> int:
    """A run without a record: the side of its training images, 32 for CIFAR; for an image folder (used at the
    files' own size), the size of its first training image, when the folder is still there."""
    if cfg.dataset != "imagefolder":
        return CIFAR_SIZE
    from PIL import Image

    train = Path(cfg.data_root).expanduser() / "train"
    try:
        first = image_files(class_folders(train)[0])[0]
        with Image.open(first) as im:
            w, h = im.size
    except (OSError, ValueError) as e:  # the folder is gone or moved (min() of nothing is a ValueError)
        warnings.warn(
            f"cannot look at the run's training images under {train} ({type(e).__name__}: {e}): resizing images to "
            f"{CIFAR_SIZE}x{CIFAR_SIZE}; if the run trained at another size, its predictions will be off",
            stacklevel=3,
        )
        return CIFAR_SIZE
    return w if w == h else CIFAR_SIZE


def _legacy_recipe(run: Path, cfg_path: Path, metrics: dict) -> Recipe:
    """The recipe of a run written before run records existed (no ``recipe.json``): every such run normalised with
    the CIFAR statistics; its classes and counts are those of its ``metrics.json``."""
    from .recipe import build_recipe

    try:
        cfg = load_config(LTConfig, cfg_path)
    except ConfigError as e:
        what = str(e).split("; known keys")[0]  # the unknown keys, without the list of every known one
        what = what if len(what) <= 200 else what[:200] + " ..."
        raise DataError(
            f"{cfg_path} is not a sla-longtail config ({what}); for a sla-fewshot run use episodes.load_run or "
            "sla-fewshot-predict"
        ) from None
    counts, names = metrics.get("class_counts"), metrics.get("class_names")
    if counts is None:
        raise DataError(f"{run} has no {runs.RECORD_FILE} (a run of an older version) and its metrics.json gives no "
                        "class counts (it has not finished): train the run again with this version")
    if names is None:
        names = [str(i) for i in range(len(counts))]
        warnings.warn(f"{run / 'metrics.json'} records no class names; the classes are named by their index",
                      stacklevel=3)
    if len(names) != len(counts):
        raise DataError(f"{run / 'metrics.json'}: {len(names)} class names but {len(counts)} class counts; the file "
                        "is damaged")
    warnings.warn(f"{run} has no {runs.RECORD_FILE} (a run of an older version): using the CIFAR statistics every "
                  "older version normalised with and the classes of its metrics.json", stacklevel=3)
    return build_recipe(cfg, class_names=names, counts=counts, stats=(CIFAR_MEAN, CIFAR_STD),
                        image_size=_train_image_size(cfg))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LongTailPredictor:
    """Rebuild a ``sla-longtail`` run's model from its folder and load its weights.

    The model is built as ``sla-longtail`` built it (:func:`longtail.recipe.build_model` of the recipe recorded in
    ``recipe.json``: config, class counts and names, normalisation statistics, image side), so the data folder is
    not read, and a folder changed since training changes nothing; the weights are ``checkpoint.pt``'s, the model
    the run was tested with once finished (a warning says so when the run stopped early). A run of an older version
    (no ``recipe.json``) is read from its ``config.yaml`` and ``metrics.json``, with the CIFAR statistics it was
    trained with (and a warning).

    Args:
        run_dir: the ``--out`` folder of one ``sla-longtail`` run (a grid's ``OUT/<loss>_<transform>/``).
        device: where the network runs (``"cpu"``, ``"cuda"``, ...).

    Returns:
        A :class:`LongTailPredictor`.

    Raises:
        DataError: the folder, its record or checkpoint.pt is missing, or the files do not fit together.
    """
    from .recipe import KIND, build_model, from_record, main_mode  # here: `import longtail` stays light (no engine)

    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise DataError(f"run folder {str(run)!r} does not exist; pass the --out folder of a sla-longtail run")
    cfg_path, weights, metrics_path = run / "config.yaml", run / "checkpoint.pt", run / "metrics.json"
    has_record = (run / runs.RECORD_FILE).is_file()
    if not has_record and not cfg_path.is_file():
        grid = sorted(p.name for p in run.iterdir() if (p / "config.yaml").is_file())
        hint = f" (it holds the grid runs {', '.join(grid[:6])}: pass one of them)" if grid else ""
        raise DataError(
            f"{run} has neither {runs.RECORD_FILE} nor config.yaml, so it is not a sla-longtail run folder{hint}; pass "
            "the --out folder of a training run"
        )
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    if has_record:
        record = runs.read_record(run, None, "load_run", legacy=LEGACY_DEFAULTS)
        if record.get("kind") != KIND:
            raise DataError(f"{run} is a {record.get('kind')!r} run, not a sla-longtail one; for a sla-fewshot run use "
                            "episodes.load_run or sla-fewshot-predict")
        recipe = from_record(record)
    else:
        recipe = _legacy_recipe(run, cfg_path, metrics)
    if not weights.is_file():
        raise DataError(f"{run} has no checkpoint.pt: the run has not saved weights yet (train it first)")
    dev = torch.device(device)
    st = checkpoint.load(weights, map_location=dev)
    lifecycle.check_checkpoint(st, weights)
    state = st.get("model")
    if not isinstance(state, dict) or not state:
        raise DataError(f"{weights} holds no 'model' state dict; it was not written by sla-longtail")
    model = build_model(recipe)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(
            f"{weights} does not fit the model the run's record describes ({first}); the folder mixes files of "
            "different runs: use a run folder as sla-longtail wrote it"
        ) from None
    done = st.get("unit")
    epochs = recipe.cfg.epochs
    if isinstance(done, int) and done < epochs:
        warnings.warn(f"{weights} is from epoch {done} of {epochs}: the run has not finished", stacklevel=2)
    mode = metrics.get("test/main_mode") or main_mode(model.modes())
    return LongTailPredictor(model, recipe, mode, dev, weights)
