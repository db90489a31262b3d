"""Shared LightningDataModule for image classification datasets."""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mobilevit.data.batchnorm import drops_untrainable_batch, log_dropped_batch
from mobilevit.data.cache import DecodedImageCache, TransformedDataset
from mobilevit.data.images import (
    file_listing,
    require_utf8_names,
    scan_images,
    unreadable_summary,
    warn_scan_result,
)
from mobilevit.data.loading import DropSkipped, SkipUnreadable, distributed_replicas, worker_start_method
from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.data.sampler import MultiScaleBatchSampler, MultiScaleDataset, resolve_multiscale_sizes
from mobilevit.data.size_plan import TrainingSizePlan
from mobilevit.data.transforms import (
    AugmentationPreset,
    BatchTransform,
    BatchTransformCollate,
    augmentation_image,
    check_augmentation_preset,
    check_image_size,
    eval_resize_size,
    eval_transform,
)
from mobilevit.errors import UserInputError, require_choice, require_int

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Splits that test_dataloader() may serve (config key ``data.split``).
EVAL_SPLITS: tuple[str, ...] = ("test", "val")

# Splits whose images are scanned when setup() prepares a stage; fit also scans the split that test() serves.
SCANNED_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": (),
    "predict": (),
    None: SPLITS,
}

Transform = Callable[[Any], torch.Tensor]

# Data-module arguments renamed since 0.1.0: old name -> new name. Stored run configs (checkpoints, sidecars) written
# before a rename are read with the new name (mobilevit.checkpoint.datamodule_from_weights); removed in 0.2.0.
RENAMED_ARGUMENTS: dict[str, str] = {"multiscale_seed": "shuffle_seed"}


class ImageClassificationDataModule(L.LightningDataModule, ABC):
    """Base data module: shared arguments, the image scan, datasets and dataloaders for the sizes it is asked for.

    It knows every size training may use (``image_size``, ``resolution_schedule``, ``multiscale``: for the cache and
    the BatchNorm batch check), but the training loop decides each epoch's size (:meth:`set_train_image_size`, from
    :class:`mobilevit.callbacks.ResolutionScheduler`); the augmentation preset is built at that size
    (``augmentation(size)``), and evaluation uses ``eval_image_size``. It never reads the Trainer: its DDP shard comes
    from torch.distributed (:func:`~mobilevit.data.loading.distributed_replicas`).

    Subclasses set ``self.class_names`` in ``__init__`` (cheap: no image decoding) and
    implement :meth:`_make_dataset`.

    Args:
        root: dataset folder.
        image_size: side length of the square images fed to the model.
        batch_size: images per batch (per process under DDP; with multi-scale, at ``image_size``).
        num_workers: dataloader worker processes (0 = load in the main process).
        pin_memory: pin host memory for faster GPU transfer (only used when CUDA is available).
        persistent_workers: keep workers alive between epochs (only effective if num_workers > 0).
        split: split served by ``test_dataloader()``: "test" or "val".
        crop_pct: evaluation resize ratio; images are resized to eval_image_size / crop_pct, then
            center-cropped.
        eval_image_size: side length for validation, test and prediction; None uses ``image_size``.
            After random-resized-crop training a larger test size can score better (the train-test
            resolution discrepancy, Touvron et al. 2019); check on val.
        augmentation: size-free training augmentation preset, ``size -> Augmentation`` (per-image transform and
            optional batch transform, e.g. MixUp/CutMix); None trains on evaluation-transformed images.
        multiscale: train with variable resolution and batch size (see :mod:`mobilevit.data.sampler`);
            validation and test stay at ``eval_image_size``.
        multiscale_sizes: training resolutions at ``image_size``; None derives them from ``image_size``
            (256 -> 160, 192, 256, 288, 320). Under a resolution schedule they scale with the scheduled size.
        shuffle_seed: seed of the training shuffle's DDP shards and of the multi-scale resolution order (the same
            on all ranks; ``data.shuffle_seed``, the run's ``seed`` by default).
        multiscale_seed: deprecated name of ``shuffle_seed`` (it seeds more than multi-scale); removed in 0.2.0.
        skip_bad_images: what to do with image files that :meth:`check_images` finds unreadable: False stops
            with one error that lists them all, True trains without them and logs which. With True, a file that
            still fails when a batch is loaded (it changed after the scan) is left out of that batch and logged.
        resolution_schedule: progressive resizing, ``[[fraction, size], ...]`` (see
            :class:`mobilevit.data.resolution.ResolutionSchedule`): the training size from that fraction of the
            training budget on, in pixels (int) or as a fraction of ``image_size`` (float). None trains at
            ``image_size`` throughout.
        resolution_schedule_batch: ``"fixed"`` (default): ``batch_size`` at every size (small images then give more,
            cheaper steps, as in FFCV's recipes); ``"pixels"``: the batch size scales with the scheduled size to hold
            the pixels of ``batch_size`` images at ``image_size`` (every step costs about the same).
        cache_images: decode every image once into shared memory (:class:`mobilevit.data.cache.DecodedImageCache`),
            with its shorter side capped at twice the largest training size (so random-resized crops down to a
            quarter of the image keep their detail) and at least the evaluation resize.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 256,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        split: str = "test",
        crop_pct: float = 0.9,
        eval_image_size: int | None = None,
        augmentation: AugmentationPreset | None = None,
        multiscale: bool = False,
        multiscale_sizes: Sequence[int] | None = None,
        shuffle_seed: int | None = 0,
        multiscale_seed: int | None = None,
        skip_bad_images: bool = False,
        resolution_schedule: Sequence[Sequence[Any]] | None = None,
        resolution_schedule_batch: str = "fixed",
        cache_images: bool = False,
    ) -> None:
        super().__init__()
        if root is None or str(root) in ("", "???"):
            raise UserInputError(
                "data.root is required: set it to the dataset folder, e.g. data.root=/path/to/data."
            )
        require_choice(split, "data.split", EVAL_SPLITS)
        require_int(num_workers, "data.num_workers", 0)
        self.root = Path(root).expanduser()
        self.image_size = check_image_size(image_size)
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.split = split
        self.crop_pct = crop_pct
        self.eval_image_size = image_size if eval_image_size is None else check_image_size(
            eval_image_size, "data.eval_image_size", why=" or null (= data.image_size)"
        )
        self.eval_transform: Transform = eval_transform(self.eval_image_size, crop_pct)
        self.augmentation = augmentation
        if augmentation is not None:
            check_augmentation_preset(augmentation, image_size)
        self.size_plan = TrainingSizePlan(
            self.image_size,
            require_int(batch_size, "data.batch_size", 1),
            schedule=ResolutionSchedule.from_config(resolution_schedule, self.image_size),
            schedule_batch=resolution_schedule_batch,
            multiscale_sizes=tuple(resolve_multiscale_sizes(image_size, multiscale_sizes) if multiscale else ()),
            explicit_multiscale_sizes=multiscale_sizes is not None,
        )
        seed_key = "data.shuffle_seed"
        if multiscale_seed is not None:
            log.warning(
                "data.multiscale_seed is deprecated (removed in 0.2.0): use data.shuffle_seed=%s.", multiscale_seed
            )
            shuffle_seed, seed_key = multiscale_seed, "data.multiscale_seed"
        self.shuffle_seed = require_int(0 if shuffle_seed is None else shuffle_seed, seed_key, 0)
        self.cache_images = bool(cache_images)
        self.skip_bad_images = bool(skip_bad_images)
        self.bad_images: dict[Path, str] = {}  # unreadable files found so far -> reason (left out of the datasets)
        self._scanned: set[str] = set()
        self.class_names: list[str] = []
        self._datasets: dict[str, Dataset] = {}
        self._train_loader: tuple[Any, DataLoader] | None = None  # (size and replicas, loader) under a schedule
        self._train_image_size: int | None = None  # set by the training loop (set_train_image_size)

    @property
    def batch_size(self) -> int:
        """Images per batch (``data.batch_size``): every evaluation batch, and training batches at ``image_size``."""
        return self.size_plan.batch_size

    @property
    def resolution_schedule(self) -> ResolutionSchedule | None:
        """The progressive-resizing schedule (``data.resolution_schedule``), or None: one training size."""
        return self.size_plan.schedule

    @property
    def multiscale(self) -> bool:
        """Whether training batches vary in resolution and batch size (``data.multiscale``)."""
        return self.size_plan.multiscale

    @property
    def multiscale_sizes(self) -> list[int]:
        """The multi-scale training sizes at ``image_size`` (empty when multi-scale is off)."""
        return list(self.size_plan.multiscale_sizes)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``class_names``)."""
        return len(self.class_names)

    @abstractmethod
    def _make_dataset(self, split: str, transform: Transform | None) -> Dataset:
        """Build the dataset of one split ("train", "val" or "test"); ``transform=None``: raw images."""

    def _labels(self, split: str) -> Sequence[int]:
        """Labels of ``split`` in dataset order, without decoding images (default: the dataset's ``targets``)."""
        dataset = self.dataset(split)
        if isinstance(dataset, MultiScaleDataset):
            dataset = dataset.dataset
        return dataset.targets  # type: ignore[attr-defined]

    def class_counts(self) -> torch.Tensor:
        """Images per class in the training split: int64 tensor (num_classes,), from labels only."""
        labels = torch.as_tensor(list(self._labels("train")), dtype=torch.int64)
        return torch.bincount(labels, minlength=self.num_classes)

    def has_split(self, split: str) -> bool:
        """Whether the dataset has images for ``split`` (default: every split exists)."""
        return split in SPLITS

    def image_files(self, split: str) -> list[Path]:
        """The image files of ``split`` (unreadable ones found so far included), for :meth:`check_images`."""
        raise NotImplementedError

    def _after_scan(self, splits: Sequence[str]) -> None:
        """Called after ``splits`` were scanned (e.g. to report files that are no images)."""

    def check_images(self, splits: Sequence[str] = SPLITS) -> None:
        """Scan the image files of ``splits`` that exist and were not scanned yet (every file decoded: a 1/8-scale
        decode for JPEGs, a chunk check for PNGs; in threads), whatever the dataset and wherever its copy came from.

        Unreadable files raise one :class:`UserInputError` that lists every one of them, unless
        ``skip_bad_images`` is set: then they are logged and left out of the datasets (``bad_images``). File names
        that are not valid UTF-8 are refused (:func:`~mobilevit.data.images.require_utf8_names`).
        """
        todo = [split for split in dict.fromkeys(splits) if split not in self._scanned and self.has_split(split)]
        if not todo:
            return
        started = time.perf_counter()
        files = list(dict.fromkeys(path for split in todo for path in self.image_files(split)))
        require_utf8_names(files, self.root)
        bad = scan_images(files)
        self._scanned.update(todo)
        log.info("Checked %d image files of %s in %.2f s.", len(files), "/".join(todo), time.perf_counter() - started)
        self._after_scan(todo)
        if not bad:
            return
        if not self.skip_bad_images:
            raise UserInputError(
                f"{unreadable_summary(bad, self.root)}: fix or delete them, or set data.skip_bad_images=true to "
                f"train without them.\n{file_listing(bad, self.root)}"
            )
        warn_scan_result(
            f"data.skip_bad_images=true: leaving out {unreadable_summary(bad, self.root)}.\n"
            f"{file_listing(bad, self.root)}"
        )
        self.bad_images.update(bad)
        for split in todo:  # built before the scan (e.g. by class_counts()): rebuild without the bad files
            self.forget_datasets(split)

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise UserInputError(f"Unknown split {split!r}; valid splits: {list(SPLITS)}.")
        return split

    def train_transform(self, size: int) -> Transform:
        """The per-image training transform at ``size``: the augmentation preset built at that size, or the
        evaluation transform without one."""
        if self.augmentation is not None:
            return augmentation_image(self.augmentation, size)
        return eval_transform(size, self.crop_pct)

    def _train_transform_at(self) -> Callable[[int], Transform]:
        """``size -> training transform`` (picklable for dataloader workers)."""
        if self.augmentation is not None:
            return functools.partial(augmentation_image, self.augmentation)
        return functools.partial(eval_transform, crop_pct=self.crop_pct)

    def set_train_image_size(self, size: int) -> None:
        """Train at ``size`` x ``size`` px from the next training loader on: the training loop decides it
        (:class:`mobilevit.callbacks.ResolutionScheduler`), this module only builds loaders for it.

        Raises:
            UserInputError: ``size`` is not an integer >= 32.
        """
        self._train_image_size = check_image_size(size, "the training image size")

    def train_size(self) -> int:
        """The training size of the coming epoch: the size last set (:meth:`set_train_image_size`), else the
        schedule's first size, else ``image_size``."""
        if self._train_image_size is not None:
            return self._train_image_size
        return self.size_plan.first_size()

    @property
    def reloads_train_dataloader(self) -> bool:
        """Whether the training loader changes between epochs (its size follows a schedule); the training loop
        (:class:`mobilevit.callbacks.ResolutionScheduler`) then asks for it every epoch."""
        return self.resolution_schedule is not None

    def cache_short_side(self) -> int:
        """Shorter side of cached images: twice the largest training size, at least the evaluation resize."""
        return max(2 * max(self.size_plan.sizes()), eval_resize_size(self.eval_image_size, self.crop_pct))

    def raw_dataset(self, split: str) -> Dataset:
        """Untransformed images of ``split`` (PIL, or uint8 tensors from the decoded-image cache), built once."""
        key = f"raw/{self._check_split(split)}"
        if key not in self._datasets:
            dataset = self._make_dataset(split, None)
            if self.cache_images:
                dataset = DecodedImageCache(dataset, self.cache_short_side())
            self._datasets[key] = dataset
        return self._datasets[key]

    def forget_datasets(self, split: str) -> None:
        """Drop every dataset built for ``split`` (e.g. after its file list changed), raw images included."""
        for key in [key for key in self._datasets if key.split("@")[0].removeprefix("raw/") == split]:
            del self._datasets[key]
        if split == "train":
            self._train_loader = None

    def dataset(self, split: str, size: int | None = None) -> Dataset:
        """The dataset of ``split`` (built once, then cached); training split uses the train transform.

        With multi-scale, the training dataset is a :class:`MultiScaleDataset` indexed by (index, size). With a
        resolution schedule it is built per training ``size`` (default: :meth:`train_size`; the raw images are kept).
        """
        self._check_split(split)
        size = (self.train_size() if size is None else size) if split == "train" else self.eval_image_size
        key = f"train@{size}" if split == "train" else split
        if key not in self._datasets:
            if split == "train" and self.multiscale:
                dataset = MultiScaleDataset(self.raw_dataset(split), self._train_transform_at())
            else:
                transform = self.train_transform(size) if split == "train" else self.eval_transform
                if self.cache_images:
                    dataset = TransformedDataset(self.raw_dataset(split), transform)
                else:
                    dataset = self._make_dataset(split, transform)
            self._datasets[key] = dataset
        return self._datasets[key]

    def setup(self, stage: str | None = None) -> None:
        """Scan the images ``stage`` needs (and the split ``test()`` serves, see :meth:`check_images`), then build
        the datasets needed for ``stage`` ("fit", "validate", "test", "predict" or None)."""
        extra = (self.split,) if stage in ("fit", "test", "predict") else ()
        self.check_images((*SCANNED_SPLITS.get(stage, ()), *extra))
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": (self.split,),
            "predict": (self.split,),
            None: ("train", "val", self.split),
        }.get(stage, ())
        for split in needed:
            self.dataset(split)

    @functools.cached_property
    def batch_transform(self) -> BatchTransform | None:
        """The augmentation's batch transform bound to this dataset's class count (None without one)."""
        batch = self.augmentation(self.image_size).batch if self.augmentation is not None else None
        return batch(self.num_classes) if batch is not None else None

    def dataloader(self, split: str, shuffle: bool | None = None, size: int | None = None) -> DataLoader:
        """DataLoader over ``split``; shuffles only the training split unless ``shuffle`` says otherwise.

        Training batches go through the augmentation's batch transform (if any). With multi-scale the
        training loader uses :class:`MultiScaleBatchSampler`. Under DDP (:func:`~mobilevit.data.loading.
        distributed_replicas`) every loader is sharded here, so the Trainer runs with ``use_distributed_sampler=False``
        (configs/trainer/default.yaml): the training split by a ``DistributedSampler`` seeded with
        ``shuffle_seed`` (padded to equal shares, reshuffled each epoch by Lightning's ``set_epoch``), the
        validation and test splits without padding (each image on exactly one rank). ``size``: the training size
        (default :meth:`train_size`), decided once so the dataset and the batches agree.
        """
        is_train = split == "train"
        size = (self.train_size() if size is None else size) if is_train else self.eval_image_size
        dataset = self.dataset(split, size)
        shuffle = is_train if shuffle is None else shuffle
        batch_size = self.size_plan.batch_size_at(size) if is_train else self.batch_size
        if is_train and self.resolution_schedule is not None:
            log.info("Training at %d px, batch size %d (data.resolution_schedule).", size, batch_size)
        collate = BatchTransformCollate(self.batch_transform) if is_train and self.batch_transform else None
        if self.skip_bad_images:  # a file that breaks after the start-up scan is left out, not fatal
            dataset, collate = SkipUnreadable(dataset), DropSkipped(collate)
        options: dict[str, Any] = dict(
            num_workers=self.num_workers,
            multiprocessing_context=worker_start_method() if self.num_workers > 0 else None,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=collate,
        )
        sampler = None
        world_size, rank = distributed_replicas()
        if not is_train and world_size > 1:
            # Every image exactly once over the ranks (DistributedSampler would repeat a few to even out the shares,
            # and every reported metric would count them twice); the shares may differ by one image.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        elif is_train and (world_size > 1 or self.multiscale):
            sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=self.shuffle_seed
            )
        if is_train and self.multiscale:
            batch_sampler = MultiScaleBatchSampler(
                sampler, self.size_plan.multiscale_sizes_at(size), size, batch_size, seed=self.shuffle_seed
            )
            if batch_sampler.dropped:
                log_dropped_batch(batch_sampler.dropped, batch_sampler.dropped_size, len(sampler), world_size)
            return DataLoader(dataset, batch_sampler=batch_sampler, **options)
        num_samples = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
        drop_last = is_train and drops_untrainable_batch(num_samples, batch_size, size, world_size)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            drop_last=drop_last,
            **options,
        )

    def check_train_batch_sizes(self) -> None:
        """Refuse a planned training batch that BatchNorm cannot train on (:meth:`TrainingSizePlan.check_batchnorm`:
        one :class:`UserInputError` naming the keys), before any image is read."""
        self.size_plan.check_batchnorm()

    def train_dataloader(self) -> DataLoader:
        """The training loader. With a resolution schedule Lightning asks for it every epoch; while the scheduled size
        stays the same the same loader is returned, so its persistent workers keep running."""
        if self.resolution_schedule is None:
            return self.dataloader("train")
        size = self.train_size()  # once: the schedule may cross a milestone while the loader is built
        key = (size, distributed_replicas())
        if self._train_loader is None or self._train_loader[0] != key:
            self._train_loader = (key, self.dataloader("train", size=size))
        return self._train_loader[1]

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Serves the split named by ``data.split`` ("test" or "val")."""
        return self.dataloader(self.split)

    def predict_dataloader(self) -> DataLoader:
        return self.dataloader(self.split)

    def __repr__(self) -> str:
        # Cheap summary; LightningDataModule.__str__ would build every dataloader.
        scales = f", multiscale_sizes={self.multiscale_sizes}" if self.multiscale else ""
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, batch_size={self.batch_size}, split={self.split!r}{scales})"
        )

    __str__ = __repr__
