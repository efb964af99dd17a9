"""The few-shot recipe: everything ``sla-fewshot`` derives from its config and data, resolved once.

:func:`resolve` turns a :class:`~episodes.config.FewShotConfig` and its loaded splits into a frozen :class:`Recipe`:
the SLA :class:`~fewshot_sla.transforms.Transform` (with the training statistics), the normalisation statistics, the
class lists of every split (for image folders with a digest of each class's files), the image shape, the episode
shapes, the number of test episodes and the learner's registry entry. The recipe is written into the run folder
(``OUT/recipe.json``, :mod:`fewshot_sla.runs`) before training, and everything that reads the run afterwards reads
it back with :func:`Recipe.from_record` instead of re-deriving it from the data folder's current state:

* ``--resume`` and ``--test-only`` load the *recorded* class lists (an image folder that gained class folders still
  tests on the recorded split; a recorded class gone, or its files changed, is an error naming it) and refuse a
  changed training config (:data:`RESUME_FREE`, :data:`RETEST_FREE` name what may change);
* :func:`episodes.load_run` takes the recorded statistics and geometry, so it needs no data;
* ``sla-report`` groups by the recorded identity (method and data, never paths).

The pieces a run is made of (:func:`build_task`, :func:`make_loop`, :func:`evaluate`, :func:`test_and_log`,
:func:`load_best`) live here too; ``episodes/train.py`` keeps only ``main`` and ``run``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from fewshot_sla import checkpoint, distributed, extras, get_transform, lifecycle, runs
from fewshot_sla import engine as eng
from fewshot_sla.augment import random_crop_flip
from fewshot_sla.config import config_from_dict, to_dict
from fewshot_sla.io import cache_contents, cache_note, files_digest
from fewshot_sla.metrics import mean_ci95
from fewshot_sla.nets import load_weights
from fewshot_sla.progress import phase
from fewshot_sla.seeding import stream_seed
from fewshot_sla.summary import write_summary
from fewshot_sla.transforms import Transform
from fewshot_sla.utils import DataError, read_json

from .backbones import make_backbone
from .config import FewShotConfig, config_options
from .datasets import (
    DATASET_STATS,
    SPLITS,
    FewShotData,
    Stats,
    episode_shapes,
    gather,
    image_stats,
    load_data,
    rotate_classes,
    to_float,
)
from .evaluate import evaluate_episodes
from .maml import ALGORITHMS, MAMLLearner
from .pretrain import PretrainHead, PretrainTask
from .protonet import ProtoNet
from .r2d2 import R2D2
from .reporting import GROUP_IGNORE, LEGACY_DEFAULTS, data_identity
from .sampler import EpisodeSampler
from .svm import MetaOptSVM
from .task import EpisodeTask

__all__ = [
    "LEARNERS", "AUTO_TEST_EPISODES", "RESUME_FREE", "RETEST_FREE", "Recipe", "resolve", "load_splits_for",
    "resolve_test_episodes", "check_config", "lr_at", "shapes_of", "make_task", "build_task", "episodic",
    "encoder_of", "initialize", "training_finished", "make_loop", "make_episode_loop", "make_pretrain_loop", "PRETRAIN",
    "make_optimizer", "evaluate", "test_and_log", "best_checkpoint", "load_best",
]

KIND = "fewshot"

def _encoding(learner: nn.Module, cfg: FewShotConfig) -> nn.Module:
    learner.encode = cfg.encode  # type: ignore[assignment]
    return learner


def _maml(encoder: nn.Module, cfg: FewShotConfig, m: int, algorithm: str) -> nn.Module:
    return MAMLLearner(encoder, cfg.ways * m, algorithm, inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                       test_inner_steps=cfg.test_inner_steps)


#: learner name -> ``(encoder, cfg, M) -> learner``. protonet, r2d2 and svm work for any number of ways; the
#: MAML family gets a fixed ``ways * M``-way head (with SLA it simply sees a bigger episode).
LEARNERS: dict[str, Callable[[nn.Module, FewShotConfig, int], nn.Module]] = {
    "protonet": lambda enc, cfg, m: ProtoNet(enc, cfg.distance, cfg.encode),
    "r2d2": lambda enc, cfg, m: _encoding(R2D2(enc), cfg),
    "svm": lambda enc, cfg, m: _encoding(MetaOptSVM(enc), cfg),
    **{name: functools.partial(_maml, algorithm=name) for name in ALGORITHMS},
    "pretrain": lambda enc, cfg, m: PretrainHead(enc, cfg.test_head),
}
#: learners trained as a classifier over the training classes' images (not on episodes): :mod:`episodes.pretrain`
PRETRAIN = frozenset({"pretrain"})

#: What ``--test-episodes 0`` means per learner. The metric learners score an episode from features embedded once
#: (episodes.evaluate), so 10,000 episodes cost little more than one pass over the test split and give the tight
#: intervals recent papers report; the MAML family adapts (and runs the encoder) per episode: the classic 600.
AUTO_TEST_EPISODES: dict[str, int] = {
    "protonet": 10_000, "r2d2": 10_000, "svm": 10_000, "pretrain": 10_000, **dict.fromkeys(ALGORITHMS, 600)
}

#: Config keys a resumed run may change besides the engine's bookkeeping (fewshot_sla.runs.FREE_RUN_KEYS): where the
#: data lives (its content is checked against the record), how often to checkpoint, and the test that follows
#: training. The val/test episode *shapes* are not free here: they shape validation, which picks best.pt.
RESUME_FREE: frozenset[str] = frozenset({"data_root", "download", "checkpoint_every", "test_only", "test_episodes"})
#: What ``--test-only`` may change: also the test episodes' shapes and the pre-trained encoder's test head (the
#: head reads frozen features, so another head re-tests the same weights).
RETEST_FREE: frozenset[str] = RESUME_FREE | {"test_ways", "test_shots", "test_queries", "test_head"}


def resolve_test_episodes(cfg: FewShotConfig) -> int:
    """The number of test episodes: ``cfg.test_episodes``, or :data:`AUTO_TEST_EPISODES` of the learner when it is 0."""
    if cfg.test_episodes < 0:
        raise ValueError(f"--test-episodes must be >= 1, or 0 for the learner's default; got {cfg.test_episodes}")
    return cfg.test_episodes or AUTO_TEST_EPISODES[cfg.learner]


def check_config(cfg: FewShotConfig, world_size: int = 1) -> None:
    """Refuse settings that cannot run, before any data is loaded."""
    if cfg.learner in ALGORITHMS and (cfg.test_ways or cfg.ways) != cfg.ways:
        raise ValueError(
            f"--learner {cfg.learner} has a fixed {cfg.ways}-way head: --test-ways must equal --ways "
            "(or use protonet, r2d2 or svm, which take any number of ways)"
        )
    if cfg.lr_factors and len(cfg.lr_factors) != len(cfg.lr_milestones):
        raise ValueError(
            f"--lr-factors has {len(cfg.lr_factors)} values but --lr-milestones has {len(cfg.lr_milestones)}; "
            "give one factor per milestone"
        )
    if cfg.meta_batch < 1 or cfg.train_episodes < 1:
        raise ValueError("--meta-batch and --train-episodes must be >= 1")
    if cfg.learner in PRETRAIN:
        if cfg.pretrain_epochs < 1 or cfg.batch_size < 2 or cfg.val_every_epochs < 0:
            raise ValueError("--learner pretrain needs --pretrain-epochs >= 1, --batch-size >= 2 and "
                             f"--val-every-epochs >= 0; got {cfg.pretrain_epochs}, {cfg.batch_size}, "
                             f"{cfg.val_every_epochs}")
        if cfg.batch_size % world_size or cfg.batch_size // world_size < 2:
            raise ValueError(f"--batch-size {cfg.batch_size} is the global batch: it must split evenly into the "
                             f"{world_size} processes, >= 2 images each")
    if cfg.sd and (cfg.learner not in PRETRAIN or get_transform(cfg.transform).m == 1):
        raise ValueError("--sd distils the aggregated SLA teacher of --learner pretrain: it needs --learner pretrain "
                         "and a --transform other than none")
    if cfg.val_every < 0:
        raise ValueError(f"--val-every must be >= 1, or 0 to validate only after the last step; got {cfg.val_every}")
    resolve_test_episodes(cfg)  # --test-episodes >= 0
    if cfg.meta_batch % world_size:
        raise ValueError(
            f"--meta-batch {cfg.meta_batch} must split evenly into the {world_size} processes (episodes of a "
            "meta-batch are divided between them); pick a multiple of the process count"
        )
    check_extras(cfg)


def check_extras(cfg: FewShotConfig) -> None:
    """Stop before any data is loaded when the run needs an optional package that is not installed
    (:class:`fewshot_sla.extras.MissingExtra`, one line naming the extra)."""
    if cfg.learner == "svm" and not extras.available("qpth"):
        extras.require("qpth", "--learner svm (MetaOptNet-SVM's differentiable QP solver)")
    if cfg.learner in PRETRAIN and cfg.test_head == "logreg" and not extras.available("sklearn"):
        extras.require("sklearn", "--test-head logreg")
    if cfg.wandb == "online" and not extras.available("wandb"):
        extras.require("wandb", "--wandb online")


def lr_at(cfg: FewShotConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): step decay or milestones."""
    if cfg.lr_milestones:
        passed = sum(step >= m for m in cfg.lr_milestones)
        if cfg.lr_factors:
            return cfg.lr * (cfg.lr_factors[passed - 1] if passed else 1.0)
        return cfg.lr * cfg.lr_gamma**passed
    return cfg.lr * (cfg.lr_gamma ** (step // cfg.lr_step) if cfg.lr_step else 1.0)


@dataclass(frozen=True)
class Recipe:
    """What a few-shot run is, resolved once (see the module docstring).

    Attributes:
        cfg: the resolved config (``test_episodes`` resolved).
        transform: the SLA transformation family with the training statistics.
        stats: ``(mean, std)`` per channel the images are normalised with.
        classes: each split's class names as loaded, before ``class_rotations`` (what a re-test loads again).
        class_digests: image folders: per split, a digest of each class's files (None for the named data sets).
        image_shape: ``(C, H, W)`` of the images the network takes.
        shapes: ``(ways, shots, queries)`` of each split's episodes.
        test_episodes: the number of test episodes.
        class_words: each split's human class names where the data set has them (Tiny ImageNet's words.txt).
        init_sha1: the SHA-1 of the ``--init`` weights file (what defines the start, not its path), or None.
    """

    cfg: FewShotConfig
    transform: Transform
    stats: Stats
    classes: Mapping[str, tuple[str, ...]]
    class_digests: Mapping[str, tuple[str, ...]] | None
    image_shape: tuple[int, int, int]
    shapes: Mapping[str, tuple[int, int, int]]
    test_episodes: int
    class_words: Mapping[str, tuple[str, ...]] | None = None
    init_sha1: str | None = None

    @property
    def train_classes(self) -> int:
        """The classes training sees (``class_rotations``: four per recorded class)."""
        return len(self.classes["train"]) * (4 if self.cfg.class_rotations else 1)

    @property
    def files_digest(self) -> str | None:
        """One digest of every recorded class's files (image folders), or None."""
        if self.class_digests is None:
            return None
        return files_digest(f"{s}/{c}:{d}" for s in SPLITS for c, d in zip(self.classes[s], self.class_digests[s]))

    def identity(self) -> dict[str, Any]:
        """What defines the method and its data (:func:`fewshot_sla.runs.identity`): the config without paths and
        bookkeeping, and the data set's identity (an image folder's file digest)."""
        config = to_dict(self.cfg)
        if self.init_sha1:  # the start is the file's content, not where it lies
            config["init"] = f"sha1:{self.init_sha1}"
        return runs.identity(config, GROUP_IGNORE, data_identity(self.cfg.dataset, self.files_digest))

    def to_json(self) -> dict[str, Any]:
        """The recipe part of the run record."""
        return {
            "transform": self.transform.name, "m": self.transform.m,
            "stats": {"mean": list(self.stats[0]), "std": list(self.stats[1])},
            "classes": {s: list(v) for s, v in self.classes.items()},
            "class_digests": (None if self.class_digests is None
                              else {s: list(v) for s, v in self.class_digests.items()}),
            "files_digest": self.files_digest,
            "image_shape": list(self.image_shape),
            "episode_shapes": {s: list(v) for s, v in self.shapes.items()},
            "test_episodes": self.test_episodes,
            "class_rotations": self.cfg.class_rotations,
            "class_words": {s: list(v) for s, v in self.class_words.items()} if self.class_words else None,
            "init_sha1": self.init_sha1,
        }

    def record(self) -> dict[str, Any]:
        """The whole run record (``OUT/recipe.json``)."""
        return runs.make_record(KIND, to_dict(self.cfg), self.to_json(), self.identity())

    def metrics_extra(self) -> dict[str, Any]:
        """What metrics.json carries for sla-report: the identity, its group and the kind."""
        ident = self.identity()
        return {"identity": ident, "group": runs.group_id(ident), "kind": KIND}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], cfg: FewShotConfig | None = None) -> Recipe:
        """The recipe a run recorded; ``cfg`` (default: the recorded config) may differ in the free keys only, and
        decides the test episodes' shapes and number."""
        rec = record["recipe"]
        if cfg is None:
            cfg = config_from_dict(FewShotConfig, record["config"], source=runs.RECORD_FILE)
        stats: Stats = (tuple(rec["stats"]["mean"]), tuple(rec["stats"]["std"]))
        digests = rec.get("class_digests")
        return cls(
            cfg=cfg,
            transform=get_transform(cfg.transform, stats=stats),
            stats=stats,
            classes={s: tuple(v) for s, v in rec["classes"].items()},
            class_digests=None if digests is None else {s: tuple(v) for s, v in digests.items()},
            image_shape=tuple(rec["image_shape"]),
            shapes=shapes_of(cfg),
            test_episodes=resolve_test_episodes(cfg),
            class_words={s: tuple(v) for s, v in rec["class_words"].items()} if rec.get("class_words") else None,
            init_sha1=rec.get("init_sha1"),
        )

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 ``(B, C, H, W)`` -> float, with the run's statistics."""
        return to_float(x, self.cfg.dataset, self.stats)


def shapes_of(cfg: FewShotConfig) -> dict[str, tuple[int, int, int]]:
    """``(ways, shots, queries)`` of each split's episodes under ``cfg`` (:func:`episodes.data.episode_shapes`)."""
    return episode_shapes(cfg.ways, cfg.shots, cfg.queries, cfg.test_ways, cfg.test_shots, cfg.test_queries)


def load_splits_for(cfg: FewShotConfig, record: Mapping[str, Any] | None = None) -> dict[str, FewShotData]:
    """The splits of a run as they are on disk, *before* ``class_rotations``: listed and split afresh for a new run;
    for a recorded one (``record``), the recorded class lists, checked against the record (a class gone or renamed,
    or an image folder class whose files changed, is a :class:`DataError` naming it)."""
    classes = None if record is None else record["recipe"]["classes"]
    cached = cache_contents(cfg.data_root)
    with phase("data", f"loading {cfg.dataset} from {cfg.data_root}", enabled=distributed.info().is_main) as p:
        splits = load_data(cfg.dataset, cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                           options=config_options(cfg), shapes=shapes_of(cfg), class_rotations=cfg.class_rotations,
                           classes=classes)
        sizes = ", ".join(f"{len(d.labels):,} {s}" for s, d in splits.items())
        p.result = f"{sum(len(d.labels) for d in splits.values()):,} images ({sizes})"
        p.note = cache_note(cfg.data_root, cached)
    if record is not None:
        _check_against_record(splits, record["recipe"], cfg)
    return splits


def _check_against_record(splits: Mapping[str, FewShotData], rec: Mapping[str, Any], cfg: FewShotConfig) -> None:
    where = f"{cfg.dataset} at {cfg.data_root!r}"
    for s in SPLITS:
        got, want = splits[s].class_names, list(rec["classes"][s])
        if got != want:
            gone = [c for c in want if c not in got]
            new = [c for c in got if c not in want]
            raise DataError(
                f"the {s} classes of {where} are not the ones the run recorded (missing: {gone[:3]}, not recorded: "
                f"{new[:3]}); the data (or this package's split files) changed since training: restore it, or train a "
                "new run"
            )
    digests = rec.get("class_digests")
    if digests is None:
        return
    for s in SPLITS:
        now = splits[s].class_digests or []
        changed = [c for c, a, b in zip(rec["classes"][s], digests[s], now) if a != b]
        if changed:
            raise DataError(
                f"the files of {len(changed)} recorded {s} class folder(s) of {where} changed since the run was "
                f"trained (e.g. {changed[0]!r}: files added, removed, renamed or rewritten); its recorded split and "
                "statistics no longer describe the folder: restore the files, or train a new run"
            )


def resolve(cfg: FewShotConfig, splits: Mapping[str, FewShotData]) -> Recipe:
    """The recipe of a new run from its config and its splits as loaded (before ``class_rotations``)."""
    train = splits["train"]
    if cfg.dataset in DATASET_STATS:
        stats = DATASET_STATS[cfg.dataset]
    else:  # an image folder: measured on its training images (exact and deterministic)
        stats = train.stats if train.stats is not None else image_stats(train.images)
    transform = get_transform(cfg.transform, stats=stats)  # resolved once; sets M
    transform.check(train.images[:1].float())  # e.g. colour permutations of 1-channel Omniglot
    folder = all(splits[s].class_digests is not None for s in SPLITS)
    return Recipe(
        cfg=dataclasses.replace(cfg, test_episodes=resolve_test_episodes(cfg)),
        transform=transform,
        stats=(tuple(stats[0]), tuple(stats[1])),
        classes={s: tuple(splits[s].class_names) for s in SPLITS},
        class_digests={s: tuple(splits[s].class_digests or ()) for s in SPLITS} if folder else None,
        image_shape=tuple(int(v) for v in train.images.shape[1:]),  # type: ignore[arg-type]
        shapes=shapes_of(cfg),
        test_episodes=resolve_test_episodes(cfg),
        class_words={s: tuple(splits[s].class_words or ()) for s in SPLITS} if train.class_words else None,
        init_sha1=_sha1(cfg.init) if cfg.init else None,
    )


def _sha1(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"--init {path!r}: no such file; give a local state-dict file "
                        "(torch.save(model.state_dict(), FILE))")
    return hashlib.sha1(p.read_bytes()).hexdigest()


def encoder_of(task: nn.Module) -> nn.Module:
    """The encoder of a run's task (every learner has one; a pre-training task's is its classifier's backbone)."""
    return cast(nn.Module, episodic(task).learner.encoder)


def initialize(recipe: Recipe, task: nn.Module) -> dict[str, Any] | None:
    """``--init``: the recorded weights file loaded into the task's encoder (a new run only), or None without one.

    Raises:
        DataError: the file changed since the recipe was resolved, or does not fit the encoder.
    """
    if not recipe.cfg.init:
        return None
    info = load_weights(encoder_of(task), recipe.cfg.init, what=f"{recipe.cfg.backbone} encoder")
    if info["sha1"] != recipe.init_sha1:
        raise DataError(f"--init {recipe.cfg.init} changed while the run started (its SHA-1 differs from the recorded "
                        "one); start again")
    return info


def episode_splits(recipe: Recipe, splits: Mapping[str, FewShotData]) -> dict[str, FewShotData]:
    """The splits episodes are drawn from: ``class_rotations`` applied to train, and each split checked to hold its
    episodes (an error before training, not at the first validation)."""
    out = dict(splits)
    if recipe.cfg.class_rotations:
        out["train"] = rotate_classes(out["train"])
    for s in ("val", "test"):
        _check_fits(recipe.cfg, s, out[s], recipe.shapes[s])
        EpisodeSampler(out[s].labels, *recipe.shapes[s], 1)
    return out


def _check_fits(cfg: FewShotConfig, split: str, data: FewShotData, shape: tuple[int, int, int]) -> None:
    """A val or test split too small for its episodes: one line naming the option the user gave (``--test-ways``, or
    ``--ways`` where val and test take the training value)."""
    ways, shots, queries = shape
    flag = {k: f"--test-{k}" if getattr(cfg, f"test_{k}") else f"--{k}" for k in ("ways", "shots", "queries")}
    hint = "" if cfg.test_ways else " (or set --test-ways for the val and test episodes alone)"
    sizes = data.labels.bincount()
    classes = int((sizes > 0).sum())
    if ways > classes:
        raise DataError(
            f"the {split} split has {classes} classes but {flag['ways']} {ways} asks for {ways}-way {split} episodes; "
            f"use {flag['ways']} <= {classes}{hint}"
        )
    need, smallest = shots + queries, int(sizes[sizes > 0].min())
    if smallest < need:
        name = data.class_names[int(torch.nonzero(sizes == smallest)[0])]
        raise DataError(
            f"class {name!r} of the {split} split has {smallest} images but {split} episodes need {flag['shots']} + "
            f"{flag['queries']} = {shots} + {queries} = {need}; lower them to a sum <= {smallest}"
        )


def make_task(
    cfg: FewShotConfig, transform: Transform, image_shape: tuple[int, int, int], train_classes: int = 0
) -> nn.Module:
    """What the engine trains: the learner of ``cfg`` (:data:`LEARNERS`) on its backbone for images ``(C, H, W)``
    inside the episodic task, or for ``pretrain`` a :class:`~episodes.pretrain.PretrainTask` over
    ``train_classes`` classes (its :attr:`~episodes.pretrain.PretrainTask.episodes` is the episodic task)."""
    c, h, _ = image_shape
    encoder = make_backbone(cfg.backbone, c, h)
    if cfg.learner in PRETRAIN:
        if train_classes < 2:
            raise ValueError(f"--learner pretrain needs the number of training classes (>= 2), got {train_classes}")
        return PretrainTask(encoder, train_classes, transform, cfg.test_head, cfg.sd, cfg.ways, cfg.shots,
                            cfg.queries, seed=cfg.seed)
    learner = LEARNERS[cfg.learner](encoder, cfg, transform.m)
    return EpisodeTask(learner, transform, cfg.ways, cfg.shots, cfg.queries)


def episodic(task: nn.Module) -> EpisodeTask:
    """The episodic view of a run's task: the task itself, or a pre-training task's :attr:`episodes`."""
    return task.episodes if isinstance(task, PretrainTask) else task  # type: ignore[return-value]


def build_task(recipe: Recipe) -> nn.Module:
    """The run's task (:func:`make_task` of the recipe)."""
    return make_task(recipe.cfg, recipe.transform, recipe.image_shape, recipe.train_classes)


@torch.no_grad()
def evaluate(
    task: EpisodeTask, data: FewShotData, recipe: Recipe, split: str, episodes: int, seed: int,
    device: torch.device, progress: bool = False,
) -> dict[str, Any]:
    """Per-episode accuracy of SLA+SI and SLA+AG over ``episodes`` episodes of ``split``'s shape, and per-class
    accuracy (AG): :func:`episodes.evaluate.evaluate_episodes`, which embeds ``data`` once for protonet, r2d2 and
    svm when that is cheaper than an encoder pass per episode (the same accuracies either way)."""
    ways, shots, queries = recipe.shapes[split]
    return evaluate_episodes(task, data, ways, shots, queries, episodes, seed, device, normalize=recipe.normalize,
                             progress=progress)


def make_loop(recipe: Recipe, ctx: eng.Context, train: FewShotData, val: FewShotData, task: nn.Module) -> eng.Loop:
    """The loop of the run's regime: meta-training on episodes (:func:`make_episode_loop`) or pre-training on batches
    of images (:func:`make_pretrain_loop`)."""
    make = make_pretrain_loop if recipe.cfg.learner in PRETRAIN else make_episode_loop
    return make(recipe, ctx, train, val, task)


def _validate(recipe: Recipe, ctx: eng.Context, val: FewShotData, task: nn.Module) -> Callable[[nn.Module],
                                                                                                dict[str, float]]:
    cfg = recipe.cfg

    def validate(t: nn.Module) -> dict[str, float]:
        res = evaluate(episodic(task), val, recipe, "val", cfg.val_episodes, cfg.seed + 10_000, ctx.device)
        return {"val/acc_agg": float(np.mean(res["acc_agg"])), "val/acc_single": float(np.mean(res["acc_single"]))}

    return validate


def make_pretrain_loop(
    recipe: Recipe, ctx: eng.Context, train: FewShotData, val: FewShotData, task: nn.Module
) -> eng.Loop:
    """One unit = one epoch over the training images in batches of ``batch_size`` (the last, shorter batch dropped),
    shuffled and cropped + flipped as pure functions of (seed, epoch); rank ``r`` of ``P`` takes ``[r::P]`` of each
    global batch, so the steps and learning rates are those of one process."""
    cfg = recipe.cfg
    rank, world, bs, n = ctx.dist.rank, ctx.dist.world_size, cfg.batch_size, len(train)
    steps = n // bs
    if steps < 1:
        raise ValueError(f"--batch-size {bs} is larger than the training split ({n} images); lower it")

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(cfg.seed, epoch,
                                                                                         name="pretrain")))
        gen = torch.Generator().manual_seed(stream_seed(cfg.seed, epoch, name="pretrain-augment"))
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            x = random_crop_flip(gather(train.images, idx), gen, cfg.augment_padding, cfg.augment_flip)
            yield recipe.normalize(x[rank::world]), train.labels[idx][rank::world]

    def stats(out: dict[str, Tensor], batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return {"acc": (out["logits"].argmax(1) == batch[1]).float().mean()}

    return eng.Loop(
        units=cfg.pretrain_epochs,
        batches=batches,
        lr=lambda epoch: lr_at(cfg, epoch),
        evaluate=_validate(recipe, ctx, val, task),
        eval_what=f"{cfg.val_episodes:,} episodes",
        eval_every=cfg.val_every_epochs,
        eval_final=True,
        select="val/acc_agg",
        stats=stats,
        unit_name="epoch",
        generators={"subset": cast(PretrainTask, task).classifier.generator},
        checkpoint_every=1,
        inner_progress=True,
        batches_per_unit=steps,
    )


def make_episode_loop(
    recipe: Recipe, ctx: eng.Context, train: FewShotData, val: FewShotData, task: nn.Module
) -> eng.Loop:
    """One unit = one optimiser step over a meta-batch; this rank takes episodes ``rank, rank + P, ...`` of it."""
    cfg = recipe.cfg
    mb, rank, world = cfg.meta_batch, ctx.dist.rank, ctx.dist.world_size
    sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, cfg.train_episodes * mb, seed=cfg.seed)

    def batches(step: int) -> Iterator[tuple[Tensor]]:
        for i in range(rank, mb, world):
            e = step * mb + i
            x = gather(train.images, sampler.episode(e))
            if cfg.augment:  # on the raw episode, before SLA's transforms; a pure function of (seed, episode)
                gen = torch.Generator().manual_seed(stream_seed(cfg.seed, e))
                x = random_crop_flip(x, gen, cfg.augment_padding, cfg.augment_flip)
            yield (recipe.normalize(x),)

    return eng.Loop(
        units=cfg.train_episodes,
        batches=batches,
        lr=lambda step: lr_at(cfg, step),
        accumulate=mb // world,
        evaluate=_validate(recipe, ctx, val, task),
        eval_what=f"{cfg.val_episodes:,} episodes",
        eval_every=cfg.val_every,
        eval_final=True,
        select="val/acc_agg",
        stats=lambda out, batch: {"acc": (out["logits"].argmax(1) == out["y"]).float().mean()},
        log_every=cfg.val_every or min(100, cfg.train_episodes),  # --val-every 0: validate only at the end
        unit_name="step",
        batch_log="train_episodes.csv",
        checkpoint_every=cfg.checkpoint_every,
        sequential_ranks=True,  # BatchNorm statistics as one process would update them, episode after episode
    )


def make_optimizer(recipe: Recipe, task: nn.Module) -> torch.optim.Optimizer:
    cfg = recipe.cfg
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(task.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(task.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def test_and_log(recipe: Recipe, task: nn.Module, test: FewShotData, ctx: eng.Context, logger: Any,
                 fit: eng.FitResult) -> dict[str, Any]:
    """Test the best checkpoint; metrics.json, test_episodes.csv and the W&B tables."""
    cfg, episodes = recipe.cfg, recipe.test_episodes
    m = recipe.transform.m
    what = f"{episodes:,} episodes on {len(test.labels):,} images x {m} transformation{'s' if m != 1 else ''}"
    with phase("test", what, enabled=ctx.is_main and ctx.spec.progress):
        res = evaluate(episodic(task), test, recipe, "test", episodes, cfg.seed + 20_000, ctx.device, progress=True)
    si, si_ci = mean_ci95(res["acc_single"])
    ag, ag_ci = mean_ci95(res["acc_agg"])
    metrics = {  # the headline number: SLA+AG with SLA; for the baseline (M = 1) AG and SI are the same numbers
        "test/acc": ag, "test/acc_ci95": ag_ci, "test/acc_single": si, "test/acc_single_ci95": si_ci,
        "test/acc_agg": ag, "test/acc_agg_ci95": ag_ci, "val/best_acc": fit.best["value"],
        "test/episodes": episodes,
        "test/per_class_acc": {n: float(a) for n, a in zip(test.class_names, res["per_class"])},
    }
    rows = [[i + 1, a, b] for i, (a, b) in enumerate(zip(res["acc_single"], res["acc_agg"]))]
    with open(ctx.out / "test_episodes.csv", "w", newline="") as f:
        csv.writer(f).writerows([["episode", "acc_single", "acc_agg"], *rows])
    if (ctx.out / "train_episodes.csv").is_file():
        with open(ctx.out / "train_episodes.csv", newline="") as f:
            train_rows = [[float(v) for v in r] for r in list(csv.reader(f))[1:]]
        logger.log_table("train/episodes", ["step", "batch", "loss", "acc"], train_rows)
    logger.log_table("test/episodes", ["episode", "acc_single", "acc_agg"], rows)
    logger.log_per_class("test/per_class_acc", [float(a) for a in res["per_class"]], test.class_names)
    if not fit.finished:  # --test-only --allow-unfinished: not a finished seed for sla-report and the scripts
        metrics.update({"finished": False, f"{units_of(to_dict(cfg))[1]}s_done": fit.units_done})
    extra = {"seed": cfg.seed, "history": fit.history, "world_size": ctx.dist.world_size, **recipe.metrics_extra()}
    if logger.finish(metrics, extra=extra) is not None:
        write_run_summary(ctx.out, metrics)
    return metrics


def write_run_summary(out: Path, metrics: Mapping[str, Any]) -> Path:
    """``OUT/summary.md`` from the run record and ``metrics.json`` (:func:`fewshot_sla.summary.write_summary`)."""
    record = runs.read_record(out, KIND, "summary.md", legacy=LEGACY_DEFAULTS)
    written = {**read_json(out / "metrics.json"), **metrics}
    config, rec = record["config"], record.get("recipe", {})
    ways, shots, queries = rec.get("episode_shapes", {}).get("test") or (config["ways"], config["shots"],
                                                                         config["queries"])
    units, unit = units_of(config)
    settings = {"learner": config.get("learner"), "backbone": config.get("backbone"), "transform": config["transform"],
                "self-distillation": config.get("sd", False), "test episodes": f"{ways}-way {shots}-shot, "
                f"{queries} queries per class", f"training {unit}s": units, "seed": config["seed"]}
    classes = rec.get("classes") or {}
    data = {"dataset": f"`{config.get('dataset')}`", "data root": f"`{config.get('data_root')}`",
            "classes": ", ".join(f"{len(v)} {k}" for k, v in classes.items()) or "n/a"}
    return write_summary(out, record, written, settings, data)


def units_of(config: Mapping[str, Any]) -> tuple[int, str]:
    """A recorded config's training length: ``(units, unit name)``; epochs for ``--learner pretrain``, else steps."""
    if config.get("learner") in PRETRAIN:
        return int(config["pretrain_epochs"]), "epoch"
    return int(config["train_episodes"]), "step"


def units_done(out: Path) -> int | None:
    """The units ``out/checkpoint.pt`` holds (None when there is no checkpoint.pt: unknown)."""
    ckpt = out / "checkpoint.pt"
    return int(checkpoint.load(ckpt).get("unit") or 0) if ckpt.is_file() else None


def training_finished(out: Path, record: Mapping[str, Any]) -> bool:
    """Whether ``out/checkpoint.pt`` holds the last unit of the recorded run (resuming it then only tests)."""
    done = units_done(out)
    return done is not None and done >= units_of(record["config"])[0]


def processes_matter(cfg: FewShotConfig) -> str | None:
    """Why another number of processes changes what a resumed run trains (None: it does not; the episodic
    learners replay the ranks' BatchNorm updates in one process's order)."""
    if cfg.learner in PRETRAIN:
        return ("--learner pretrain splits each batch between the processes, so BatchNorm normalises over each "
                "process's share")
    return None


def best_checkpoint(out: Path) -> Path:
    """``out/best.pt``, or a :class:`DataError` saying how to get one (``--test-only`` needs a trained run)."""
    best_path = out / "best.pt"
    if not best_path.is_file():
        raise DataError(
            f"--test-only evaluates the best checkpoint {best_path}, which does not exist: train the run first "
            "(the same command without --test-only), or point --out (the config's out) at a finished run folder"
        )
    return best_path


def load_best(task: nn.Module, out: Path, device: torch.device) -> eng.FitResult:
    """Load ``out/best.pt`` into ``task`` (weights only) for ``--test-only``; returns what :func:`test_and_log`
    records of the training: the best validation (from best.pt) and the history (from checkpoint.pt, if kept).

    Raises:
        DataError: best.pt is missing or unreadable, or holds weights of another learner or backbone.
    """
    best_path = best_checkpoint(out)
    st = checkpoint.load(best_path, device)
    lifecycle.check_checkpoint(st, best_path)
    try:
        task.load_state_dict(st["model"])
    except (KeyError, RuntimeError) as e:
        raise DataError(
            f"{best_path} does not fit the learner/backbone/transform of the run's record ({type(e).__name__}: "
            f"{str(e)[:300]}); the folder mixes files of different runs"
        ) from e
    ckpt = out / "checkpoint.pt"
    history = list(checkpoint.load(ckpt)["history"]) if ckpt.is_file() else []
    best = dict(st.get("best") or {"metric": "val/acc_agg", "value": None, "unit": st.get("unit")})
    return eng.FitResult(units_done=int(st.get("unit") or 0), finished=True, history=history, best=best)
