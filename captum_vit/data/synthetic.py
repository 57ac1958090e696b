r"""The bundled synthetic benchmark: one class-defining object among
distractors on textured clutter, with exact per-pixel ground truth.

Every image is drawn from a seed, so the benchmark needs no file and is the
same on every machine. The class is the *shape* of the one target object
(:data:`CLASS_NAMES`). Everything else in the image is drawn from a
distribution that does not depend on the class:

* the clutter: a random dark, desaturated base colour, low-frequency colour
  noise, a random sinusoidal stripe pattern and pixel grain;
* the distractors: 3 to 5 thin line segments and L-shaped corners, of random
  orientation, length and colour, placed so that they never touch the target
  (nor each other); none of them is one of the class shapes;
* the colour of the target, drawn from the same palette as the distractors'.

Hence the target's pixels are the only class-informative region, and the
target mask is exact (no occlusion, no anti-aliasing), which makes
localisation metrics against it meaningful.
"""

import functools
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ._common import GridSample, Sample, _apply_transform, box_from_mask

#: Names of the classes of :class:`SyntheticObjects`, by label.
CLASS_NAMES: Tuple[str, ...] = (
    "disk",
    "square",
    "triangle",
    "plus",
    "ring",
    "cross",
    "diamond",
    "frame",
)

_SPLITS = {"train": 0, "val": 1, "test": 2}

# Saturated colours shared by targets and distractors (colour is no class cue).
_PALETTE = np.array(
    [
        [0.95, 0.15, 0.15],
        [0.15, 0.85, 0.20],
        [0.20, 0.35, 1.00],
        [0.95, 0.90, 0.15],
        [0.90, 0.20, 0.90],
        [0.15, 0.90, 0.95],
        [1.00, 0.55, 0.10],
        [0.95, 0.95, 0.95],
    ],
    dtype=np.float32,
)

# Size of the target's bounding square and of the distractors, as fractions of
# the image side (64 px images: targets of 18-28 px, distractors of 8-16 px).
_TARGET_FRAC = (18 / 64, 28 / 64)
_DISTRACTOR_FRAC = (8 / 64, 16 / 64)

#: An object's bounding box ``(x0, y0, x1, y1)`` in pixels.
_Box = Tuple[float, float, float, float]


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Class shape on normalised coordinates ``u, v`` in ``[-1, 1]``."""
    au, av = np.abs(u), np.abs(v)
    r2 = u * u + v * v
    name = CLASS_NAMES[label]
    if name == "disk":
        return r2 <= 1.0
    if name == "square":
        return (au <= 0.85) & (av <= 0.85)
    if name == "triangle":
        return (v >= -0.95) & (v <= 0.95) & (au <= 0.5 * (v + 0.95))
    if name == "plus":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "cross":
        p, q = np.abs(u + v) / np.sqrt(2), np.abs(u - v) / np.sqrt(2)
        inside = (au <= 1.0) & (av <= 1.0)
        return inside & (((p <= 0.22) & (q <= 1.3)) | ((q <= 0.22) & (p <= 1.3)))
    if name == "diamond":
        return au + av <= 1.0
    if name == "frame":
        outer = (au <= 0.85) & (av <= 0.85)
        return outer & ~((au <= 0.5) & (av <= 0.5))
    raise ValueError(f"unknown class {label}")


def _segment_mask(
    x: np.ndarray,
    y: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    half_width: float,
) -> np.ndarray:
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    dx, dy = x - (p0[0] + t * d[0]), y - (p0[1] + t * d[1])
    return dx * dx + dy * dy <= half_width * half_width


@functools.lru_cache(maxsize=16)
def _interp_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Linear interpolation matrix ``(out_size, in_size)`` (align corners)."""
    pos = np.linspace(0.0, in_size - 1.0, out_size)
    lo = np.clip(np.floor(pos).astype(int), 0, in_size - 2)
    frac = pos - lo
    mat = np.zeros((out_size, in_size), dtype=np.float32)
    mat[np.arange(out_size), lo] = 1.0 - frac
    mat[np.arange(out_size), lo + 1] = frac
    return mat


@functools.lru_cache(maxsize=16)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each ``(size, size)`` float32."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured background without grain, ``(3, size, size)``, float32."""
    grey = rng.uniform(0.15, 0.4)
    base = (grey + rng.uniform(-0.08, 0.08, size=3)).astype(np.float32)
    low = rng.normal(0.0, 0.09, size=(3, 5, 5)).astype(np.float32)
    mat = _interp_matrix(size, 5)
    low = mat @ low @ mat.T
    yy, xx = _grid(size)
    freq = rng.uniform(2.0, 7.0, size=2) * rng.choice([-1.0, 1.0], size=2) / size
    phase = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.02, 0.07)
    stripes = amp * np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy) + phase)
    return low + (stripes.astype(np.float32) + base[:, None, None])


def _boxes_overlap(a: _Box, b: _Box, gap: float) -> bool:
    return not (
        a[2] + gap <= b[0]
        or b[2] + gap <= a[0]
        or a[3] + gap <= b[1]
        or b[3] + gap <= a[1]
    )


def render_sample(
    rng: np.random.Generator, label: int, image_size: int = 64
) -> Tuple[np.ndarray, np.ndarray]:
    r"""Draw one benchmark image with a target of class ``label``.

    Args:
        rng (numpy.random.Generator): the source of randomness; the image is a
            deterministic function of its state.
        label (int): class of the target object, an index into
            :data:`CLASS_NAMES`.
        image_size (int, optional): side of the square image in pixels; object
            sizes scale with it.
            Default: 64

    Returns:
        tuple[ndarray, ndarray]: the image, float32 ``(3, S, S)`` in ``[0, 1]``,
        and the target mask, bool ``(S, S)``.

    Examples::

        >>> img, mask = render_sample(np.random.default_rng(0), label=3)
        >>> img.shape, mask.shape
        ((3, 64, 64), (64, 64))
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    size = int(image_size)
    img = _clutter(rng, size)
    yy, xx = _grid(size)

    # target
    side = rng.uniform(*_TARGET_FRAC) * size
    half = side / 2
    cx = rng.uniform(half + 1, size - half - 1)
    cy = rng.uniform(half + 1, size - half - 1)
    target = _shape_mask(label, (xx - cx) / half, (yy - cy) / half)
    placed: List[_Box] = [(cx - half, cy - half, cx + half, cy + half)]
    colours = _PALETTE[rng.integers(len(_PALETTE), size=8)]
    colours = colours * rng.uniform(0.8, 1.0, size=(8, 1)).astype(np.float32)

    paint = np.full((size, size), -1, dtype=np.int8)
    _draw_distractors(rng, paint, placed, int(rng.integers(3, 6)), first=1)
    paint[target] = 0
    return _paint(rng, img, paint, colours), target


def _draw_distractors(
    rng: np.random.Generator,
    paint: np.ndarray,
    placed: List[_Box],
    count: int,
    first: int,
) -> None:
    """Draw ``count`` distractors (thin segments and L-corners) into ``paint``
    as the values ``first, first + 1, ...``; each is kept away from every box
    in ``placed`` (and appended to it), so that it never touches an object.
    A distractor that finds no free place in 30 tries is left out."""
    size = paint.shape[0]
    yy, xx = _grid(size)
    gap = max(2.0, size / 32)
    for k in range(count):
        for _ in range(30):
            length = rng.uniform(*_DISTRACTOR_FRAC) * size
            width = rng.uniform(1.5, 2.5) * size / 64
            angle = rng.uniform(0, 2 * np.pi)
            start = rng.uniform(0, size, size=2)
            d = length * np.array([np.cos(angle), np.sin(angle)])
            pts = [start, start + d]
            if rng.random() < 0.5:  # L-corner: second arm at a right angle
                turn = rng.choice([-1.0, 1.0])
                arm = rng.uniform(0.5, 1.0) * np.array([-d[1], d[0]]) * turn
                pts.append(start + d + arm)
            pts_arr = np.stack(pts)
            lo, hi = pts_arr.min(0) - width, pts_arr.max(0) + width
            if lo.min() < 0 or hi.max() > size:
                continue
            box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
            if any(_boxes_overlap(box, other, gap) for other in placed):
                continue
            placed.append(box)
            r0, c0 = int(lo[1]), int(lo[0])
            r1, c1 = int(np.ceil(hi[1])), int(np.ceil(hi[0]))
            win = paint[r0:r1, c0:c1]
            mask = np.zeros(win.shape, dtype=bool)
            for a, b in zip(pts_arr[:-1], pts_arr[1:]):
                mask |= _segment_mask(
                    xx[r0:r1, c0:c1], yy[r0:r1, c0:c1], a, b, width / 2
                )
            win[mask] = first + k
            break


def _paint(
    rng: np.random.Generator, img: np.ndarray, paint: np.ndarray, colours: np.ndarray
) -> np.ndarray:
    """Paint every object of ``paint`` (value ``k >= 0``: colour ``colours[k]``)
    onto the clutter ``img`` in place, add pixel grain (less on objects) and
    clip to ``[0, 1]``."""
    objects = paint >= 0
    img[:, objects] = colours[paint[objects]].T
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    img += noise * np.where(objects, np.float32(0.02), np.float32(0.035))
    np.clip(img, 0.0, 1.0, out=img)
    return img


def _rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    return np.random.default_rng([int(seed), _SPLITS[split], stream, int(index)])


class _SeededDataset(Dataset):
    """What both synthetic datasets share: ``n`` samples, each a deterministic
    function of ``(seed, split, index)``, drawn when read."""

    #: Names of the classes, by label.
    classes: Tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        n: int,
        seed: int = 0,
        split: str = "test",
        image_size: int = 64,
        transform: Optional[Callable] = None,
    ) -> None:
        _rng(seed, split, 0)  # validates split
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        self._check_image_size(int(image_size))
        self.n = int(n)
        self.seed = int(seed)
        self.split = split
        self.image_size = int(image_size)
        self.transform = transform

    def _check_image_size(self, image_size: int) -> None:
        """Raise if a dataset cannot draw images of this side (subclasses)."""

    def _transformed(self, image: torch.Tensor) -> torch.Tensor:
        return _apply_transform(self.transform, image)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        """``index`` in ``[0, n)``; negative indices count from the end."""
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return index % self.n

    def tensors(self) -> Any:
        r"""The whole dataset as one batch: every sample, batched by
        ``torch.utils.data.default_collate`` (what a ``DataLoader`` with
        ``batch_size=len(dataset)`` yields).

        Returns:
            NamedTuple: the dataset's sample type with stacked fields, e.g. for
            :class:`SyntheticObjects` a :class:`Sample` of images
            ``(n, 3, S, S)``, labels int64 ``(n,)``, masks bool ``(n, S, S)``
            and boxes ``(n, 4)``; ``transform`` is applied to every image.

        Examples::

            >>> images, labels, masks, boxes = SyntheticObjects(200).tensors()
        """
        return default_collate([self[i] for i in range(self.n)])


class SyntheticObjects(_SeededDataset):
    r"""The bundled synthetic benchmark: images with one target object, whose
    shape is the class, among distractors on textured clutter.

    Sample ``i`` is a deterministic function of ``(seed, split, i)`` alone and
    is drawn when it is read, so datasets of any length cost no memory and the
    same index gives the same sample in any process. Labels cycle through the
    classes (``label = i % num_classes``), so every prefix of the dataset is
    balanced. See :mod:`captum_vit.data.synthetic` for what is drawn.

    Args:
        n (int): number of samples.
        seed (int, optional): seed of the benchmark.
            Default: 0
        split (str, optional): ``"train"``, ``"val"`` or ``"test"``; each split
            draws from its own random stream, so splits never share an image.
            Default: ``"test"``
        image_size (int, optional): side of the square images in pixels.
            Default: 64
        transform (Callable, optional): applied to each image tensor (float,
            ``(3, S, S)``, in ``[0, 1]``), for example a normalisation.
            Default: None

    Examples::

        >>> ds = SyntheticObjects(100, seed=0)
        >>> s = ds[0]
        >>> s.image.shape, s.label, s.mask.shape, s.box
        (torch.Size([3, 64, 64]), 0, torch.Size([64, 64]), tensor([...]))
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=32)
        >>> batch = next(iter(loader))  # a Sample of stacked tensors
        >>> images, labels = ds.tensors()[:2]  # the whole set at once
    """

    #: Names of the classes, by label.
    classes: Tuple[str, ...] = CLASS_NAMES

    def _raw(self, index: int) -> Tuple[torch.Tensor, int, torch.Tensor]:
        index = self._index(index)
        label = index % self.num_classes
        img, mask = render_sample(
            _rng(self.seed, self.split, index), label, self.image_size
        )
        return torch.from_numpy(img), label, torch.from_numpy(mask)

    def __getitem__(self, index: int) -> Sample:
        image, label, mask = self._raw(index)
        return Sample(self._transformed(image), label, mask, box_from_mask(mask))


class SyntheticGrid(_SeededDataset):
    r"""2x2 grids of :class:`SyntheticObjects` images of four different
    classes, for the grid pointing game (Böhle et al., "Convolutional Dynamic
    Alignment Networks", CVPR 2021).

    Each cell is a benchmark image drawn at half the grid's side, so by
    default a grid has the size of a single benchmark image (objects are half
    as large).
    The four cells have four different classes; one cell is the target
    (``target = i % 4``) and its class is the sample's ``label``. An
    explanation of ``label`` should put its mass in the target cell.

    Pass ``image_size=128`` to keep the objects at the 64 px benchmark scale:
    the embedded model ``synthetic_vit`` was trained on single objects of that
    scale; loaded with ``captum_vit.zoo.load(dynamic_img_size=True)`` its top
    class on 128 px grids is one of the four grid classes for 84% of grids
    (200 grids, seed 5), against 59% on 64 px grids, whose objects are half
    as large.

    Args:
        n (int): number of grids.
        seed (int, optional): seed of the benchmark.
            Default: 0
        split (str, optional): ``"train"``, ``"val"`` or ``"test"``.
            Default: ``"test"``
        image_size (int, optional): side of the whole grid in pixels (even).
            Default: 64
        transform (Callable, optional): applied to each grid image tensor.
            Default: None

    Examples::

        >>> ds = SyntheticGrid(16, seed=0)
        >>> g = ds[0]
        >>> g.image.shape, g.cell, g.cell_labels[g.cell] == g.label
        (torch.Size([3, 64, 64]), 0, tensor(True))
    """

    classes: Tuple[str, ...] = CLASS_NAMES

    def _check_image_size(self, image_size: int) -> None:
        if image_size % 2:
            raise ValueError(f"image_size must be even, got {image_size}")

    def __getitem__(self, index: int) -> GridSample:
        index = self._index(index)
        rng = _rng(self.seed, self.split, index, stream=1)
        labels = rng.permutation(self.num_classes)[:4]
        cell = index % 4
        half = self.image_size // 2
        image = np.zeros((3, self.image_size, self.image_size), dtype=np.float32)
        mask = np.zeros((self.image_size, self.image_size), dtype=bool)
        for k in range(4):
            img_k, mask_k = render_sample(rng, int(labels[k]), half)
            r, c = (k // 2) * half, (k % 2) * half
            image[:, r : r + half, c : c + half] = img_k
            if k == cell:
                mask[r : r + half, c : c + half] = mask_k
        mask_t = torch.from_numpy(mask)
        return GridSample(
            self._transformed(torch.from_numpy(image)),
            int(labels[cell]),
            cell,
            torch.from_numpy(labels.astype(np.int64)),
            mask_t,
            box_from_mask(mask_t),
        )

    @staticmethod
    def cell_masks(image_size: int = 64) -> torch.Tensor:
        r"""Boolean masks of the four cells of a grid.

        Args:
            image_size (int, optional): side of the grid in pixels.
                Default: 64

        Returns:
            Tensor: bool ``(4, image_size, image_size)``; entry ``k`` is
            ``True`` on cell ``k`` (row-major).

        Examples::

            >>> cells = SyntheticGrid.cell_masks(64)
            >>> cells.sum(dim=(1, 2))
            tensor([1024, 1024, 1024, 1024])
        """
        half = image_size // 2
        out = torch.zeros(4, image_size, image_size, dtype=torch.bool)
        for k in range(4):
            r, c = (k // 2) * half, (k % 2) * half
            out[k, r : r + half, c : c + half] = True
        return out
