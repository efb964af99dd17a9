"""Load a trained ``sla-fewshot`` run and classify query images against a support set (``sla-fewshot-predict``'s
command line is :mod:`episodes.cli_predict`).

:func:`load_run` rebuilds the run's episodic task exactly as ``sla-fewshot`` built it (from the
run's record ``recipe.json``: its config, image shape and normalisation statistics; no data is read), loads
its best validation weights (``best.pt``) and returns a
:class:`FewShotPredictor` that reads images as the run's data loader did::

    predictor = episodes.load_run("runs/omni_5w1s_sla")
    scores = predictor.predict(["a1.png", "a2.png", "b1.png"], ["a", "a", "b"], ["q1.png", "q2.png"])
    scores.shape, predictor.classes          # (2, 2), ['a', 'b']: a softmax of the logits, uncalibrated
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

from fewshot_sla import checkpoint, lifecycle, runs
from fewshot_sla.io import decode_images
from fewshot_sla.utils import DataError

from .config import MODES, FewShotConfig
from .datasets import Stats, to_float
from .maml import ALGORITHMS
from .task import EpisodeTask

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["FewShotPredictor", "load_run", "MODES"]


#: PIL modes without colour (one band, or grey with alpha).
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

ImageFile: TypeAlias = "str | Path | PILImage.Image"
#: What ``predict`` takes as images: one path or PIL image, a list of them, or a uint8 tensor (B, C, H, W).
Images: TypeAlias = "Tensor | ImageFile | Sequence[ImageFile]"


def _resample(mode: str) -> Any:
    from PIL import Image

    # The filters fewshot_sla.io.decode_images resizes files with (LANCZOS for grey, BILINEAR for RGB): a PIL image
    # or a tensor then gives the pixels its file would.
    return Image.Resampling.LANCZOS if mode == "L" else Image.Resampling.BILINEAR


def _label_list(labels: Any, n: int) -> list[Hashable]:
    if isinstance(labels, (Tensor, np.ndarray)):
        labels = labels.tolist()  # python ints / strings: hashable and comparable
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(
            f"support_labels must be a sequence with one label per support image, got {type(labels).__name__}"
        )
    out = list(labels)
    if len(out) != n:
        raise ValueError(f"{n} support images but {len(out)} support labels; pass one label per support image")
    try:
        hash(tuple(out))
    except TypeError:
        raise TypeError("support labels must be hashable (strings or ints, say)") from None
    return out


class FewShotPredictor:
    """A trained ``sla-fewshot`` task with the run's own preprocessing (built by :func:`load_run`).

    Images may be given as file paths, PIL images, a list mixing both, or a uint8 tensor ``(B, C, H, W)``, of any
    size. Each is brought to the run's form as the run's data loader read its files: ``C`` = the run's channels
    (files and PIL images are converted to grey or RGB: grey for Omniglot, RGB for mini-ImageNet and CIFAR, what
    the run used for an image folder), ``H = W`` = the run's image side (resized with the loaders' filters: LANCZOS
    for grey, BILINEAR for RGB; the aspect ratio is not kept), and, for Omniglot only, files and PIL images are
    inverted (``255 - x``: the ink bright on a dark background, as :func:`episodes.load_fewshot` stores them). A
    **tensor is taken as already in the data set's convention**, i.e. as :func:`episodes.load_fewshot` returns
    images: it is not inverted and must have the run's number of channels (it is resized like a file when its side
    differs). Then :func:`episodes.to_float` normalises them with the run's statistics. A grey run (Omniglot, say)
    given colour files or PIL images warns once per predictor: they are converted to grey, but the network never saw
    such images.

    Attributes:
        task: the :class:`episodes.task.EpisodeTask` in eval mode, on ``device``.
        cfg: the run's :class:`episodes.config.FewShotConfig`.
        channels, image_size: the images the network takes, ``(channels, image_size, image_size)``.
        stats: the ``(mean, std)`` per channel the run normalised with (:func:`episodes.data.dataset_stats`).
        device: where the network runs.
        weights: the checkpoint file loaded (``best.pt``, or ``checkpoint.pt`` when there is no best.pt).
        classes: after :meth:`predict`, the label of each output column: the sorted distinct support labels.
    """

    def __init__(
        self, task: EpisodeTask, cfg: FewShotConfig, channels: int, image_size: int, stats: Stats,
        device: torch.device, weights: Path,
    ) -> None:
        self.task = task.to(device).eval()
        self.cfg = cfg
        self.channels, self.image_size = int(channels), int(image_size)
        self.stats = stats
        self.device = device
        self.weights = weights
        self.classes: list[Hashable] = []
        self._warned_colour = False

    @property
    def mode(self) -> Literal["L", "RGB"]:
        """The PIL mode images are read in: ``"L"`` (grey) or ``"RGB"``."""
        return "L" if self.channels == 1 else "RGB"

    @property
    def invert(self) -> bool:
        """Whether files and PIL images are inverted (Omniglot: stored with the ink bright)."""
        from .datasets import LOADERS

        return LOADERS[self.cfg.dataset].invert

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"FewShotPredictor({c.learner}/{c.backbone}, transform {c.transform!r} (M={self.task.m}), "
            f"{c.dataset} {self.channels}x{self.image_size}x{self.image_size}, weights {self.weights})"
        )

    # -- images ---------------------------------------------------------------------------------------------------

    def _from_pil(self, im: PILImage.Image) -> np.ndarray:
        """One PIL image -> ``(C, S, S)`` uint8, as :func:`fewshot_sla.io.decode_images` reads its file."""
        im = im.convert(self.mode)
        s = self.image_size
        if im.size != (s, s):
            im = im.resize((s, s), _resample(self.mode))
        a = np.asarray(im, dtype=np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return 255 - a if self.invert else a

    def _from_tensor(self, x: Tensor, what: str) -> Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(
                f"{what}: a tensor must be uint8 pixels (B, C, H, W), got {x.dtype} of shape {tuple(x.shape)}; "
                "for one image (C, H, W) use x.unsqueeze(0), for floats pass (x * 255).round().to(torch.uint8)"
            )
        if x.shape[1] != self.channels:
            raise ValueError(
                f"{what}: the run takes {self.channels}-channel images but the tensor has {x.shape[1]} channels; "
                "pass the images as files or PIL images (they are converted) or convert the tensor"
            )
        x = x.detach().cpu()
        s = self.image_size
        if x.shape[-2:] == (s, s):
            return x.contiguous()
        from PIL import Image

        # Resized with PIL, as files are: the same image gives the same pixels whatever form it comes in.
        out = []
        for img in x.numpy():
            im = Image.fromarray(img[0] if self.channels == 1 else img.transpose(1, 2, 0))
            a = np.asarray(im.resize((s, s), _resample(self.mode)), dtype=np.uint8)
            out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out)).contiguous()

    def _note_colour(self, items: Sequence[Any], what: str) -> None:
        """Warn once per predictor when a grey run is given colour files or PIL images (they are converted to grey:
        the network never saw colour, and photos unlike its training images are likely classified poorly)."""
        if self.channels != 1 or self._warned_colour:
            return
        from PIL import Image

        colour = 0
        for item in items:
            mode = item.mode if isinstance(item, Image.Image) else None
            if isinstance(item, (str, Path)):
                try:
                    with Image.open(item) as im:  # the header only: the pixels are decoded once, later
                        mode = im.mode
                except (OSError, ValueError):
                    continue  # unreadable: decoding names the file
            colour += mode is not None and mode not in _GREY_MODES
        if colour:
            self._warned_colour = True
            warnings.warn(
                f"{colour} of the {len(items)} {what} images are colour, but this run was trained on grey "
                f"{self.cfg.dataset} images (1x{self.image_size}x{self.image_size}): they are converted to grey, and "
                "images unlike the training ones may be classified poorly (this warning is shown once)",
                stacklevel=3,
            )

    def load_images(self, images: Images, what: str = "images") -> Tensor:
        """Images in any accepted form -> uint8 ``(B, C, S, S)`` on the CPU, in the data set's convention.

        Raises:
            ValueError / TypeError: no images, or an item of an unknown kind; DataError: a file cannot be read.
        """
        if isinstance(images, Tensor):
            x = self._from_tensor(images, what)
        else:
            from PIL import Image

            items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
            self._note_colour(items, what)
            arrays: list[np.ndarray | None] = []
            files: list[tuple[int, Path]] = []
            for i, item in enumerate(items):
                if isinstance(item, (str, Path)):
                    files.append((i, Path(item)))
                    arrays.append(None)
                elif isinstance(item, Image.Image):
                    arrays.append(self._from_pil(item))
                else:
                    raise TypeError(
                        f"{what}: item {i} is a {type(item).__name__}; give file paths, PIL images or one uint8 "
                        "tensor (B, C, H, W)"
                    )
            if files:  # the loaders' own reader: same decoder, filter and inversion as the run's data
                decoded = decode_images([p for _, p in files], self.mode, self.image_size, progress=False,
                                        invert=self.invert, fix="replace the file or leave it out")
                for (i, _), a in zip(files, decoded):
                    arrays[i] = a
            if not arrays:
                raise ValueError(f"{what}: no images given")
            # contiguous (NCHW) whatever the arrays' strides: a channels-last batch would take other conv kernels,
            # whose float sums differ in the last bits, and the same image would not score the same in every form
            x = torch.from_numpy(np.stack([a for a in arrays if a is not None])).contiguous()
        if x.shape[0] == 0:
            raise ValueError(f"{what}: no images given")
        return x

    # -- prediction -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(
        self, support: Images, support_labels: Sequence[Hashable] | Tensor | np.ndarray, query: Images,
        mode: str = "aggregated",
    ) -> Tensor:
        """Class scores of the query images given a labelled support set: the softmax of the learner's logits.

        The softmax is uncalibrated: an episodic learner's logits (negative squared distances, a ridge or SVM
        head's outputs) carry no temperature fitted to accuracy, so its largest entry is often near 1 on queries
        that are wrong. It ranks the support classes for one query; read it as a probability of being right only
        after calibrating it on held-out episodes.

        The support set may hold any number of images per class, in any order (ProtoNet, R2D2, MetaOptNet-SVM);
        the MAML family (maml, fomaml, metasgd, anil) needs exactly the run's ``ways`` classes. The
        whole support and query sets form one episode, as in the run's test episodes: the MAML family normalises
        with the batch's statistics (transductive BatchNorm, as it was trained), so there a query's scores also
        depend on the other queries of the call.

        Args:
            support: the support images (see the class docstring for the accepted forms), ``S`` of them.
            support_labels: ``S`` hashable labels (strings or ints, say), one per support image.
            query: the query images, ``Q`` of them.
            mode: ``"aggregated"`` (SLA+AG: the joint logits of the ``M`` transformed copies averaged, then a
                softmax: the paper's aggregated posterior) or ``"single"`` (SLA+SI: the untransformed copy only).
                With ``transform: none`` (``M = 1``) both are the plain learner.

        Returns:
            ``(Q, N)`` float32 softmax of the logits over the ``N`` support classes (rows sum to 1), on the CPU;
            column ``i`` is class :attr:`classes` ``[i]``, the sorted distinct support labels (set by this call).

        Raises:
            ValueError: a bad mode, no images, labels that do not match the images, fewer than 2 classes, or a
                class count the learner cannot take; TypeError: an input of an unknown kind; DataError: an
                unreadable file.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        sx = self.load_images(support, "support")
        qx = self.load_images(query, "query")
        labels = _label_list(support_labels, len(sx))
        try:
            classes = sorted(set(labels))  # type: ignore[type-var]  # Hashable is not known to be comparable
        except TypeError:
            raise TypeError(
                "support labels must be mutually comparable so that the output columns can be sorted (all strings "
                "or all ints)"
            ) from None
        if len(classes) < 2:
            raise ValueError(
                f"the support set holds {len(classes)} class(es) ({classes}); give at least 2: the scores are "
                "a softmax over the support classes"
            )
        if self.cfg.learner in ALGORITHMS and len(classes) != self.cfg.ways:
            raise ValueError(
                f"this run's learner {self.cfg.learner!r} has a fixed {self.cfg.ways}-way head (x M transforms) but "
                f"the support set holds {len(classes)} classes; give exactly {self.cfg.ways} classes (protonet, r2d2 "
                "and svm runs take any number)"
            )
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[c] for c in labels], dtype=torch.int64, device=self.device)
        def norm(x: Tensor) -> Tensor:
            return to_float(x.to(self.device), self.cfg.dataset, self.stats)

        out = self.task.predict_support_query(norm(sx), y, norm(qx), len(classes))
        self.classes = list(classes)
        return torch.softmax(out[mode].float(), dim=1).cpu()


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> FewShotPredictor:
    """Rebuild a ``sla-fewshot`` run's task from its folder and load its weights.

    The task is built exactly as ``sla-fewshot`` built it (:func:`episodes.recipe.make_task` with the config,
    image shape and SLA transform of the run's record ``recipe.json``);
    the weights are ``best.pt`` (the best validation step, which the run's
    test numbers are of), or ``checkpoint.pt`` with a warning when a run has no ``best.pt`` yet.

    Args:
        run_dir: the ``--out`` folder of a ``sla-fewshot`` run (``recipe.json``, ``best.pt``).
        device: where the network runs (``"cpu"``, ``"cuda"``, ...).

    Returns:
        A :class:`FewShotPredictor`.

    Raises:
        DataError: the folder, its recipe.json or both checkpoints are missing, or the files do not fit together.
        ImportError: the run's learner needs qpth (svm), which is not installed.
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise DataError(f"run folder {str(run)!r} does not exist; pass the --out folder of a sla-fewshot run")
    # here, not at the top: `import episodes` stays light (no engine)
    from .recipe import KIND, Recipe, episodic, make_task
    from .reporting import LEGACY_DEFAULTS

    record = runs.read_record(run, KIND, "episodes.load_run", legacy=LEGACY_DEFAULTS)
    recipe = Recipe.from_record(record)
    cfg = recipe.cfg
    weights = run / "best.pt"
    if not weights.is_file():
        if not (run / "checkpoint.pt").is_file():
            raise DataError(
                f"{run} has neither best.pt nor checkpoint.pt: the run has not saved weights yet (train it, or "
                "pass the folder of a finished run)"
            )
        weights = run / "checkpoint.pt"
        warnings.warn(
            f"{run} has no best.pt (no validation has finished yet): using checkpoint.pt, the latest weights, "
            "which are not the best-validation weights a finished run is tested with",
            stacklevel=2,
        )
    dev = torch.device(device)
    st = checkpoint.load(weights, map_location=dev)
    lifecycle.check_checkpoint(st, weights)
    state = st.get("model")
    if not isinstance(state, dict) or not state:
        raise DataError(f"{weights} holds no 'model' state dict; it was not written by sla-fewshot")
    channels, size, _ = recipe.image_shape
    task = make_task(cfg, recipe.transform, recipe.image_shape, recipe.train_classes)
    try:
        task.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(
            f"{weights} does not fit the task the run's {runs.RECORD_FILE} describes ({first}); the folder mixes "
            "files of different runs: use a run folder as sla-fewshot wrote it"
        ) from None
    return FewShotPredictor(episodic(task), cfg, channels, size, recipe.stats, dev, weights)
