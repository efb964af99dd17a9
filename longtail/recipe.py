"""The long-tail recipe: what a run derives from its config and its data, resolved once and recorded in the run.

:func:`resolve` turns an :class:`~longtail.config.LTConfig` and the loaded :class:`~longtail.data.LTData` into a
frozen :class:`Recipe`: the normalisation statistics (CIFAR's fixed ones, or an image folder's own training
images'; ``--norm-stats``, :data:`longtail.data.STATS_SOURCES`), the SLA transform built with them, the class names
and training counts, the image side, the digests of an image folder's file lists, the LDAM-DRW plan
(:func:`scale_epochs`, once), the loss, sampler and learning-rate schedule from their registries. Everything else
of a run reads the recipe:

* :func:`build_model`, :func:`make_loop`, :func:`evaluate`, :func:`report`, :func:`finish` (``sla-longtail``'s
  training and test), ``bench/longtail.py`` and :func:`longtail.predict.load_run`;
* the run record ``OUT/recipe.json`` (:func:`fewshot_sla.runs.make_record`, written by :func:`open_run` before
  training): ``--resume`` refuses a changed training config (naming the keys) and a data folder that no longer
  matches (naming what differs), and then continues with the recorded recipe; the predictor rebuilds the model
  from it (:func:`from_record`), never from the data folder's current state.

The run's learning rate is a pure function of ``(epoch, batch, batches_per_epoch)`` (:meth:`Recipe.lr`), set by
the engine before every batch, so a per-step warm-up resumes exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from fewshot_sla import SLAClassifier, Transform, checkpoint, distributed, extras, get_transform, lifecycle, runs
from fewshot_sla import engine as eng
from fewshot_sla.augment import random_crop_flip
from fewshot_sla.config import ConfigError, config_from_dict, to_dict
from fewshot_sla.io import cache_contents, cache_note, files_digest
from fewshot_sla.io import normalize as _normalize
from fewshot_sla.metrics import accuracy, balanced_accuracy, per_class_accuracy, shot_group_accuracy
from fewshot_sla.nets import make_backbone
from fewshot_sla.progress import phase
from fewshot_sla.summary import write_summary
from fewshot_sla.tracking import RunLogger
from fewshot_sla.utils import DataError, inference_batches, read_json

from .config import LTConfig
from .data import STATS_SOURCES, LTData, Stats, limit_per_class, load_longtail
from .losses import LOSSES, ImbalanceLoss, head_for
from .reporting import GROUP_IGNORE, LEGACY_DEFAULTS, data_identity
from .samplers import SAMPLERS, LTSampler
from .schedules import SCHEDULES, WARMUPS, LTSchedule, lr_at, scale_epochs

__all__ = [
    "KIND", "FREE_KEYS", "EVAL_BATCH", "LOSS_OPTIONS", "Recipe", "check_config", "load_data", "resolve",
    "build_recipe", "from_record", "open_run", "build_model", "sync_batchnorm", "make_loop", "eval_batch_size",
    "evaluate", "main_mode", "report", "finish",
]

#: The run record's kind (``OUT/recipe.json``'s ``"kind"``).
KIND = "longtail"
#: The command that trains a run (named in the messages that say how to resume one).
COMMAND = "sla-longtail"
#: Config keys a resumed run may change besides :data:`fewshot_sla.runs.FREE_RUN_KEYS`: where the data lives (its
#: content is checked against the record instead), how often the test set is looked at during training and in
#: batches of how many images (speed only).
FREE_KEYS: tuple[str, ...] = ("data_root", "download", "eval_every", "eval_batch")
#: The test evaluation's images per forward pass under ``--eval-batch 0``, per device type (others: 500). On the
#: CPU ResNet-32 runs faster at 100 than at 500 (what LDAM-DRW's own test loop uses; docs/performance.md, "Test
#: evaluation"); on a GPU a large batch keeps the device busy. The batch changes the speed only: in eval mode no
#: image's logits depend on the other images of its batch (BatchNorm uses its running statistics), and the tests
#: check that batch sizes predict the same (tests/longtail/test_evaluate.py).
EVAL_BATCH: dict[str, int] = {"cpu": 100, "cuda": 1000}
#: The config fields that parametrise a loss: ``LOSS_OPTIONS[loss](cfg)`` -> keyword arguments of ``LOSSES[loss]``.
LOSS_OPTIONS: dict[str, Callable[[LTConfig], dict[str, float]]] = {
    "vs": lambda c: {"gamma": c.vs_gamma, "tau": c.vs_tau},
}


# -- the recipe -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """Everything a run derives from its config and data (build it with :func:`resolve` or :func:`from_record`).

    Attributes:
        cfg: the run's config.
        stats: ``(mean, std)`` per channel the images are normalised with (:meth:`normalize`).
        class_names: ``C`` names, index = label.
        counts: ``C`` training images per class (after the long-tailed subsampling and ``limit_train``).
        image_size: the side of the training images (what a predictor resizes to).
        files: for an image folder, the digests of the ``train`` and ``test`` file lists; None for CIFAR.
        schedule: the LDAM-DRW plan scaled to ``cfg.epochs`` (warm-up, milestones, DRW epoch).
        transform: the SLA transform, with :attr:`stats`.
        loss: ``LOSSES[cfg.loss]``; ``loss_options`` its keyword arguments from the config.
        sampler: ``SAMPLERS[cfg.sampler]``.
    """

    cfg: LTConfig
    stats: Stats
    class_names: tuple[str, ...]
    counts: tuple[int, ...]
    image_size: int
    files: Mapping[str, str] | None
    schedule: LTSchedule
    transform: Transform
    loss: type[ImbalanceLoss]
    loss_options: Mapping[str, float]
    sampler: type[LTSampler]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` uint8 -> float32 ``(x / 255 - mean) / std`` with the run's statistics."""
        return _normalize(x, *self.stats)

    def lr(self, epoch: int, batch: int = 0, batches_per_epoch: int = 1) -> float:
        """The learning rate of step ``batch`` of ``epoch`` (:func:`longtail.schedules.lr_at`: ``cfg.schedule``
        after ``cfg.warmup``'s warm-up over ``schedule.warmup`` epochs)."""
        c = self.cfg
        return lr_at(c.schedule, c.warmup, self.schedule, c.lr, epoch, batch, batches_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        """The ``"recipe"`` part of the run record (strict JSON; :func:`from_record` reads it back)."""
        s = self.schedule
        return {
            "stats": {"mean": list(self.stats[0]), "std": list(self.stats[1])},
            "class_names": list(self.class_names),
            "class_counts": list(self.counts),
            "subset_seed": self.cfg.subset_seed,
            "image_size": self.image_size,
            "files": dict(self.files) if self.files is not None else None,
            "schedule": {"epochs": s.epochs, "warmup": s.warmup, "milestones": list(s.milestones),
                         "drw_epoch": s.drw_epoch},
        }

    def identity(self) -> dict[str, Any]:
        """What defines the run's method and data (:func:`fewshot_sla.runs.identity`): never a path."""
        files = files_digest(f"{k}:{v}" for k, v in sorted(self.files.items())) if self.files is not None else None
        return runs.identity(to_dict(self.cfg), GROUP_IGNORE, data_identity(self.cfg.dataset, files))

    def record(self) -> dict[str, Any]:
        """The run record (``OUT/recipe.json``): kind, config, :meth:`to_dict`, identity and group."""
        return runs.make_record(KIND, to_dict(self.cfg), self.to_dict(), self.identity())


def check_config(cfg: LTConfig, world_size: int = 1) -> None:
    """Refuse a config that cannot train, naming the flag (ValueError)."""
    tf = get_transform(cfg.transform)
    if cfg.sd and tf.m == 1:
        raise ValueError("--sd distils the aggregated SLA teacher: it needs a --transform other than none")
    if cfg.imbalance_ratio < 1:
        raise ValueError(f"--imbalance-ratio must be >= 1, got {cfg.imbalance_ratio}")
    if cfg.sam_rho < 0:
        raise ValueError(f"--sam-rho is SAM's radius and must be >= 0 (0 = plain SGD), got {cfg.sam_rho}")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError("--epochs must be >= 1 and --batch-size >= 2")
    if cfg.eval_batch < 0 or cfg.eval_batch == 1:
        raise ValueError(f"--eval-batch must be 0 (auto: per device) or >= 2 test images, got {cfg.eval_batch}")
    if cfg.batch_size % world_size or cfg.batch_size // world_size < 2:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is the global batch and must split evenly into {world_size} processes "
            "of >= 2 images; pick a multiple of the process count"
        )
    if cfg.wandb == "online" and not extras.available("wandb"):
        extras.require("wandb", "--wandb online")


def load_data(cfg: LTConfig, progress: bool = False) -> LTData:
    """The long-tailed training set (``--subset-seed``'s subset, cut to ``--limit-train``) and the test set
    (cut to ``--limit-test``, stratified by order)."""
    cached = cache_contents(cfg.data_root)
    with phase("data", f"loading {cfg.dataset} from {cfg.data_root}", enabled=progress) as p:
        d = load_longtail(cfg.dataset, cfg.data_root, cfg.imbalance_ratio, cfg.profile, cfg.subset_seed,
                          cfg.download, progress=progress)
        p.result = f"{len(d.train_labels) + len(d.test_labels):,} images ({len(d.train_labels):,} train, " \
                   f"{len(d.test_labels):,} test)"
        p.note = cache_note(cfg.data_root, cached)
    y = d.train_labels.numpy()
    if cfg.limit_train and cfg.limit_train < len(y):
        keep = torch.from_numpy(limit_per_class(y, cfg.limit_train))
        d.train_images, d.train_labels = d.train_images[keep], d.train_labels[keep]
        d.counts = np.bincount(d.train_labels.numpy(), minlength=d.num_classes).tolist()
    if cfg.limit_test and cfg.limit_test < len(d.test_labels):
        n = len(d.test_labels)
        order = np.argsort(np.arange(n) % max(1, n // cfg.limit_test), kind="stable")
        sel = torch.from_numpy(np.sort(order[: cfg.limit_test]))
        d.test_images, d.test_labels = d.test_images[sel], d.test_labels[sel]
    return d


def build_recipe(
    cfg: LTConfig, *, class_names: list[str] | tuple[str, ...], counts: list[int] | tuple[int, ...], stats: Stats,
    image_size: int, files: Mapping[str, str] | None = None, schedule: LTSchedule | None = None,
) -> Recipe:
    """A :class:`Recipe` from its resolved values (the one constructor :func:`resolve` and :func:`from_record` use).

    Args:
        cfg: the config.
        class_names, counts, stats, image_size, files: see :class:`Recipe`.
        schedule: the plan (None: :func:`scale_epochs` of ``cfg.epochs``).

    Raises:
        ValueError: an unknown loss, sampler, schedule or warm-up (a config built without the command line's
            checks), or names and counts of different lengths.
    """
    for what, key, registry in (("loss", cfg.loss, LOSSES), ("sampler", cfg.sampler, SAMPLERS),
                                ("schedule", cfg.schedule, SCHEDULES), ("warmup", cfg.warmup, WARMUPS)):
        if key not in registry:
            raise ValueError(f"unknown {what} {key!r}; choose one of {', '.join(registry)}")
    if len(class_names) != len(counts):
        raise ValueError(f"{len(class_names)} class names but {len(counts)} class counts")
    mean, std = (tuple(float(v) for v in s) for s in stats)
    return Recipe(
        cfg=cfg,
        stats=(mean, std),
        class_names=tuple(str(n) for n in class_names),
        counts=tuple(int(c) for c in counts),
        image_size=int(image_size),
        files=dict(files) if files is not None else None,
        schedule=schedule if schedule is not None else scale_epochs(cfg.epochs),
        transform=get_transform(cfg.transform, stats=(mean, std)),
        loss=LOSSES[cfg.loss],
        loss_options=LOSS_OPTIONS.get(cfg.loss, lambda c: {})(cfg),
        sampler=SAMPLERS[cfg.sampler],
    )


def resolve(cfg: LTConfig, data: LTData) -> Recipe:
    """The recipe of ``cfg`` on ``data`` (:func:`load_data`): the statistics are measured here, once
    (``--norm-stats``: :data:`longtail.data.STATS_SOURCES`)."""
    if cfg.norm_stats not in STATS_SOURCES:
        raise ValueError(f"unknown norm_stats {cfg.norm_stats!r}; choose one of {', '.join(STATS_SOURCES)}")
    stats = STATS_SOURCES[cfg.norm_stats](cfg.dataset, data.train_images)
    return build_recipe(cfg, class_names=data.class_names, counts=data.counts, stats=stats,
                        image_size=int(data.train_images.shape[-1]), files=data.files)


def from_record(record: Mapping[str, Any], cfg: LTConfig | None = None) -> Recipe:
    """The recipe a run recorded (``fewshot_sla.runs.read_record(out, "longtail")``), without its data.

    Args:
        record: the run record.
        cfg: the config to attach (a resumed run's, whose bookkeeping may differ); None = the recorded config.

    Raises:
        DataError: the record lacks a field or holds a config this version cannot read.
    """
    try:
        rec = record["recipe"]
        if cfg is None:
            cfg = config_from_dict(LTConfig, dict(record["config"]), source="recipe.json")
        s = rec["schedule"]
        return build_recipe(
            cfg, class_names=rec["class_names"], counts=rec["class_counts"],
            stats=(rec["stats"]["mean"], rec["stats"]["std"]), image_size=rec["image_size"], files=rec["files"],
            schedule=LTSchedule(int(s["epochs"]), int(s["warmup"]), tuple(int(m) for m in s["milestones"]),
                                int(s["drw_epoch"])),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"the run record is not a long-tail recipe this version reads ({type(e).__name__}: {e}); "
                        "train the run again with this version") from None


def _data_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded recipe and the one the data gives now, in words."""
    out = []
    a, b = old.get("class_names") or [], new.get("class_names") or []
    if a != b:
        gone, added = [n for n in a if n not in b], [n for n in b if n not in a]
        out.append(f"the class list ({len(a)} recorded, {len(b)} now; missing {gone[:5]}, added {added[:5]}"
                   + (", same classes in another order" if not gone and not added else "") + ")")
    fa, fb = old.get("files") or {}, new.get("files") or {}
    for split in sorted(set(fa) | set(fb)):
        if fa.get(split) != fb.get(split):
            out.append(f"the files of {split}/ (digest {fa.get(split)} recorded, {fb.get(split)} now: files added, "
                       "removed, renamed or resized)")
    for key, what in (("class_counts", "the training class counts"), ("stats", "the training images' statistics"),
                      ("image_size", "the image size"), ("subset_seed", "the subset seed")):
        if a == b and runs.canonical(old.get(key)) != runs.canonical(new.get(key)):
            out.append(f"{what} ({runs.canonical(old.get(key))} recorded, {runs.canonical(new.get(key))} now)")
    return out


def open_run(cfg: LTConfig, data: LTData, out: str | Path, write: bool = True,
             world_size: int = 1) -> tuple[Recipe, dict[str, Any]]:
    """The run's recipe and record: resolved and written to ``OUT/recipe.json`` (when ``write``: rank 0), or, when
    ``cfg.resume`` finds a checkpoint or ``cfg.test_only`` re-tests, the recorded ones after checking that nothing
    but bookkeeping changed. A new run in a folder holding another run is refused unless ``cfg.overwrite``
    (:func:`fewshot_sla.lifecycle.check_new_run`).

    Raises:
        ConfigError: a training config other than the recorded one (naming the keys), another number of processes
            where it changes training, or a folder holding another run.
        DataError: ``--resume`` of a run without a record, or on data that no longer matches it (naming what).
    """
    recipe = resolve(cfg, data)
    out = Path(out)
    if cfg.test_only or (cfg.resume and (out / "checkpoint.pt").is_file()):
        what = "--test-only" if cfg.test_only else "--resume"
        record = runs.read_record(out, KIND, what, legacy=LEGACY_DEFAULTS)
        runs.check_resume(record, to_dict(cfg), free=FREE_KEYS, what=what)
        if not cfg.test_only:
            lifecycle.check_processes(record, world_size, cfg.sync_bn, processes_matter(cfg))
        diff = _data_differences(record["recipe"], recipe.to_dict())
        if diff:
            raise DataError(
                f"{what}: the data under {cfg.data_root} no longer matches the run's record "
                f"({out / runs.RECORD_FILE}): {'; '.join(diff)}; point --data-root at the data the run trained on, "
                "or start a new run in another --out"
            )
        return from_record(record, cfg), record
    lifecycle.check_new_run(out, cfg.resume, cfg.overwrite, COMMAND, clear=write)
    distributed.barrier()  # every rank has looked at the folder before rank 0 writes the record into it
    record = {**recipe.record(), "processes": lifecycle.processes(world_size, cfg.sync_bn)}
    if write:
        runs.write_record(out, record)
    return recipe, record


def processes_matter(cfg: LTConfig) -> str | None:
    """Why another number of processes changes what a resumed run trains (None: with --sync-bn it does not)."""
    if cfg.sync_bn:
        return None
    return ("without --sync-bn each process's BatchNorm normalises over its share of the global batch "
            "(batch_size / processes images)")


def retest_status(cfg: LTConfig, out: str | Path) -> bool:
    """For ``--test-only``: whether the run in ``out`` finished training (its checkpoint.pt at the last epoch).

    Raises:
        DataError: no checkpoint.pt to test.
        ConfigError: an unfinished run without ``--allow-unfinished``.
    """
    ckpt = Path(out) / "checkpoint.pt"
    if not ckpt.is_file():
        raise DataError(f"--test-only tests the run's weights {ckpt}, which do not exist: train the run first (the "
                        "same command without --test-only), or point --out at a trained run folder")
    record = runs.read_record(out, KIND, "--test-only", legacy=LEGACY_DEFAULTS)
    done = int(checkpoint.load(ckpt).get("unit") or 0)
    return lifecycle.check_finished(done, int(record["config"]["epochs"]), "epoch", cfg.allow_unfinished, COMMAND, out)


def load_last(model: nn.Module, out: str | Path, device: torch.device, finished: bool) -> eng.FitResult:
    """Load ``out/checkpoint.pt``'s weights into ``model`` for ``--test-only``; returns what :func:`finish` records
    of the training (epochs done, history)."""
    path = Path(out) / "checkpoint.pt"
    st = checkpoint.load(path, device)
    lifecycle.check_checkpoint(st, path)
    try:
        model.load_state_dict(st["model"])
    except (KeyError, RuntimeError) as e:
        raise DataError(f"{path} does not fit the model of the run's record ({type(e).__name__}: {str(e)[:300]}); "
                        "the folder mixes files of different runs") from None
    return eng.FitResult(int(st.get("unit") or 0), finished, list(st.get("history") or []), dict(st.get("best") or {}))


# -- the model and the loop -------------------------------------------------------------------------------------------
M = TypeVar("M", bound=nn.Module)


def build_model(recipe: Recipe) -> SLAClassifier:
    """The SLA regime with the imbalance loss on the joint head (joint class ``(i, j)`` counts ``n_i``); with
    ``--sd`` the distilled head gets the same loss. The transform (with the run's statistics) sets ``M``."""
    cfg = recipe.cfg
    drw = recipe.schedule.drw_epoch if cfg.drw else None

    def loss(m: int) -> ImbalanceLoss:
        return recipe.loss(list(recipe.counts), m, drw_epoch=drw, **recipe.loss_options)  # type: ignore[arg-type]

    criterion = loss(recipe.transform.m)
    return SLAClassifier(
        make_backbone(cfg.backbone),
        recipe.num_classes,
        recipe.transform,
        distill=cfg.sd,
        criterion=criterion,
        sd_criterion=loss(1) if cfg.sd else None,
        temperature=cfg.temperature,
        distill_scale=criterion.logit_scale,  # LDAM: distil s * cos, not cosines (else KD is ~400x too weak)
        head=head_for(cfg.loss),
        seed=cfg.seed,
    )


def sync_batchnorm(model: M, sync: bool, device: torch.device, world_size: int) -> M:
    """``model`` with every BatchNorm a :class:`torch.nn.SyncBatchNorm` when ``sync`` and ``world_size > 1``
    (statistics over the global batch, as torchvision's ``--sync-bn``), else ``model`` unchanged.

    Raises:
        ConfigError: ``sync`` with several processes on a CPU: torch's SyncBatchNorm runs on CUDA only.
    """
    if not sync or world_size < 2:
        return model
    if device.type != "cuda":
        raise ConfigError(
            f"--sync-bn: torch {torch.__version__.split('+')[0]}'s SyncBatchNorm runs on CUDA only, and these "
            f"{world_size} processes train on {device.type}; drop --sync-bn (each process then normalises with "
            "the statistics of its own share of the batch), or train on GPUs"
        )
    return cast(M, nn.SyncBatchNorm.convert_sync_batchnorm(model))


def _batches_per_epoch(total: int, batch_size: int, world_size: int, drop_last: bool = False) -> int:
    """Batches of an epoch of ``total`` draws (all ranks) in global batches: a last partial one is dropped when
    ``drop_last``, and always when it has < 2 images per rank (BatchNorm needs two)."""
    full, rest = divmod(total, batch_size)
    return full + (not drop_last and rest // world_size >= 2)


def make_loop(recipe: Recipe, ctx: eng.Context, data: LTData, model: SLAClassifier) -> eng.Loop:
    """Epochs of sampler batches, augmented where the model trains; the lr per step; DRW and the sampler via
    ``set_epoch``.

    Each global batch (``cfg.batch_size`` draws of the epoch's order, :meth:`LTSampler.global_indices`) is cropped
    and flipped as a whole with the random stream ``(seed, epoch)``, and rank ``r`` keeps its share ``[r::P]``: the
    images and augmentations of a step are those of one process, however many there are.
    """
    cfg = recipe.cfg
    rank, world = ctx.dist.rank, ctx.dist.world_size
    sampler = recipe.sampler(data.train_labels, seed=cfg.seed, num_epochs=cfg.epochs, rank=rank, world_size=world)
    # The training set lives where the model trains (uint8: 37 MB for CIFAR-10-LT-100); no host round-trip.
    train_x, train_y = data.train_images.to(ctx.device), data.train_labels.to(ctx.device)
    n_batches = _batches_per_epoch(len(sampler) * world, cfg.batch_size, world, cfg.drop_last)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        idx = sampler.global_indices(epoch).to(ctx.device)
        gen = torch.Generator().manual_seed(eng.stream_seed(cfg.seed, epoch, 0))  # draws on the CPU, any device
        for s in range(0, len(idx), cfg.batch_size):
            b = idx[s : s + cfg.batch_size]
            if len(b) // world >= 2 and not (cfg.drop_last and len(b) < cfg.batch_size):  # BatchNorm needs two
                yield recipe.normalize(random_crop_flip(train_x[b], gen, 4)[rank::world]), train_y[b[rank::world]]

    def stats(out: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        y = batch[1]
        if "logits" in out:
            z = out["logits"]
        else:  # random-subset SLA: the identity copy's transform-0 columns
            z = out["joint_logits"].view(len(y), -1, model.num_classes, model.m)[:, 0, :, 0]
        return {"acc": (z.argmax(1) == y).float().mean()}

    def test_metrics(m: torch.nn.Module) -> dict[str, float]:
        rep = report(evaluate(model, data.test_images, ctx.device, recipe.stats, cfg.eval_batch),
                     data.test_labels.numpy(), list(recipe.counts))
        return {k: v for k, v in rep.items() if isinstance(v, float)}

    criteria: list[eng.SupportsSetEpoch] = [c for c in (model.criterion, model.sd_criterion) if hasattr(c, "set_epoch")]  # type: ignore[misc]
    plan = recipe.schedule
    return eng.Loop(
        units=cfg.epochs,
        batches=batches,
        lr=lambda e: recipe.lr(e, 0, n_batches),  # the logged lr of an epoch: its first step's
        step_lr=lambda e, b: recipe.lr(e, b, n_batches),
        set_epoch=[sampler, *criteria],
        evaluate=test_metrics if cfg.eval_every else None,
        eval_what=f"{len(data.test_labels):,} test images",
        eval_every=cfg.eval_every,
        stats=stats,
        extra=lambda e: {"drw": float(cfg.drw and plan.drw(e))},
        unit_name="epoch",
        generators={"subset": model.generator},
        inner_progress=True,
        batches_per_unit=n_batches,
        sam_rho=cfg.sam_rho,
    )


# -- test and report --------------------------------------------------------------------------------------------------
def eval_batch_size(batch: int, device: torch.device, copies: int = 1) -> int:
    """Test images per batch, so that no forward pass sees more than ``batch`` (``--eval-batch``) inputs, or for 0
    the device type's :data:`EVAL_BATCH` (500 for a type it does not name): ``batch // copies`` images (at least
    2) when each is scored as ``copies`` transformed copies in one pass (SLA+AG: ``M``). On the CPU ResNet-32 runs
    about as fast at 25 to 100 inputs per pass and 1.6x slower at 400, so SLA's ``M = 4`` copies of 100 images
    would cost the aggregated pass that much."""
    rows = batch if batch > 0 else EVAL_BATCH.get(device.type, 500)
    return max(2, rows // max(1, copies))


@torch.no_grad()
def evaluate(model: SLAClassifier, images: Tensor, device: torch.device, stats: Stats,
             batch: int = 0) -> dict[str, np.ndarray]:
    """Predicted classes of every mode the model has, ``{mode: (N,)}``, on uint8 test images normalised with
    ``stats`` (the run's :attr:`Recipe.stats`).

    Each batch is one :meth:`SLAClassifier.predict_modes` call (SLA+SD: ``1 + M`` backbone passes for its three
    modes) of at most ``batch`` inputs per pass (0 = per device; SLA: ``batch // M`` images, whose ``M`` copies
    fill the aggregated pass: :func:`eval_batch_size`). The batch sets the speed, not the predictions.
    """
    preds: dict[str, list[np.ndarray]] = {m: [] for m in model.modes()}
    for rows in inference_batches(len(images), eval_batch_size(batch, torch.device(device), model.m)):
        x = _normalize(images[rows].to(device), *stats)
        for mode, z in model.predict_modes(x).items():
            preds[mode].append(z.argmax(1).cpu().numpy())
    return {m: np.concatenate(p) for m, p in preds.items()}


def main_mode(modes: tuple[str, ...] | list[str]) -> str:
    """The headline prediction mode: distilled > aggregated > single."""
    return "distilled" if "distilled" in modes else "aggregated" if "aggregated" in modes else "single"


def report(preds: dict[str, np.ndarray], labels: np.ndarray, counts: list[int]) -> dict[str, Any]:
    """The metrics keys of metrics.json. ``test/acc`` is SLA+SI (the plain prediction); the
    balanced/group metrics use the best mode the model has (distilled > aggregated > single)."""
    out: dict[str, Any] = {"test/acc": accuracy(labels, preds["single"])}
    if "aggregated" in preds:
        out["test/acc_agg"] = accuracy(labels, preds["aggregated"])
    if "distilled" in preds:
        out["test/acc_distilled"] = accuracy(labels, preds["distilled"])
    main = main_mode(list(preds))
    pca = per_class_accuracy(labels, preds[main], len(counts))
    out["test/main_mode"] = main
    out["test/balanced_acc"] = balanced_accuracy(labels, preds[main])
    out.update({f"test/acc_{k}": v for k, v in shot_group_accuracy(pca, counts).items()})
    out["test/per_class_acc"] = [float(a) for a in pca]
    return out


def finish(recipe: Recipe, record: Mapping[str, Any], model: SLAClassifier, data: LTData, ctx: eng.Context,
           logger: RunLogger, fit: eng.FitResult) -> dict[str, Any]:
    """Test the trained model; metrics.json (with the record's identity, group and kind), the per-class plot and
    the W&B tables (rank 0)."""
    from fewshot_sla.report.plots import per_class_plot

    cfg = recipe.cfg
    counts, names = list(recipe.counts), list(recipe.class_names)
    m = recipe.transform.m
    what = f"predicting {len(data.test_labels):,} images x {m} transformation{'s' if m != 1 else ''}"
    with phase("test", what, enabled=ctx.is_main and ctx.spec.progress):
        preds = evaluate(model, data.test_images, ctx.device, recipe.stats, cfg.eval_batch)
    labels = data.test_labels.numpy()
    metrics = {"epochs_done": fit.units_done, **report(preds, labels, counts)}
    if not fit.finished:  # --test-only --allow-unfinished: not a finished seed for sla-report and the scripts
        metrics["finished"] = False
    main = metrics["test/main_mode"]
    title = (
        f"{cfg.dataset}-LT {cfg.imbalance_ratio:g}, {cfg.loss}{'+DRW' if cfg.drw else ''}, "
        f"{'baseline' if model.m == 1 else 'SLA'}{'+SD' if cfg.sd else ''} ({main})"
    )
    try:
        plot = per_class_plot({title: metrics["test/per_class_acc"]}, counts, ctx.out / "per_class_acc.png",
                              class_names=names, title=title)
    except ImportError:  # matplotlib is the [plots] extra: the run's metrics do not need it
        warnings.warn("matplotlib is not installed: the per-class plot is skipped (pip install "
                      "'fewshot-sla[plots]')", stacklevel=2)
        plot = None
    logger.log_per_class("test/per_class_acc", metrics["test/per_class_acc"], names, counts)
    logger.log_confusion("test/confusion", labels.tolist(), preds[main].tolist(), names)
    if plot is not None:
        logger.log_image("test/per_class_acc_plot", plot)
    extra = {"seed": cfg.seed, "subset_seed": cfg.subset_seed, "class_counts": counts, "class_names": names,
             "history": fit.history, "world_size": ctx.dist.world_size,
             "identity": record["identity"], "group": record["group"], "kind": record["kind"]}
    if logger.finish(metrics, extra=extra) is not None:
        write_run_summary(ctx.out, record, metrics)
    return metrics


def write_run_summary(out: Path, record: Mapping[str, Any], metrics: Mapping[str, Any]) -> Path:
    """``OUT/summary.md`` from the run record and ``metrics.json`` (:func:`fewshot_sla.summary.write_summary`)."""
    config, rec = record["config"], record.get("recipe", {})
    written = {**read_json(out / "metrics.json"), **metrics}
    settings = {"loss": f"{config.get('loss')}{'+DRW' if config.get('drw') else ''}", "sampler": config.get("sampler"),
                "backbone": config.get("backbone"), "transform": config["transform"],
                "self-distillation": config.get("sd", False), "imbalance ratio": config.get("imbalance_ratio"),
                "training epochs": config.get("epochs"), "seed": config.get("seed")}
    counts = rec.get("class_counts") or record.get("class_counts") or []
    data = {"dataset": f"`{config.get('dataset')}`", "data root": f"`{config.get('data_root')}`",
            "classes": f"{len(counts)}, {sum(counts)} training images (largest class {max(counts, default=0)}, "
                       f"smallest {min(counts, default=0)})"}
    return write_summary(out, record, written, settings, data)
