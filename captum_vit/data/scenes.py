r"""Captioned scenes: several coloured objects per image, for vision-language
models (training a small CLIP, open-vocabulary localisation).

A scene is drawn with the renderer of the synthetic benchmark
(:mod:`captum_vit.data.synthetic`: the same clutter, the same thin distractors,
the same exact, occlusion-free masks), but it holds one to a few *objects*,
each a class shape of :data:`~captum_vit.data.CLASS_NAMES` painted in one of
the colours of :data:`COLOUR_NAMES`. Unlike in
:class:`~captum_vit.data.SyntheticObjects`, colour is a cue here: an object is
named by its colour and shape (``"a red disk"``). Within a scene, objects have
pairwise different shapes *and* pairwise different colours, and no distractor
has the colour of an object, so a prompt that names one attribute of an object
(its shape, or its colour) or both names that object alone.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._common import box_from_mask
from .synthetic import (
    _PALETTE,
    CLASS_NAMES,
    _Box,
    _boxes_overlap,
    _clutter,
    _draw_distractors,
    _grid,
    _paint,
    _rng,
    _SeededDataset,
    _shape_mask,
)

#: Names of the object colours, by index (the palette of the synthetic
#: benchmark).
COLOUR_NAMES: Tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "cyan",
    "orange",
    "white",
)

#: Most objects a scene may hold (more do not fit without touching at 64 px).
MAX_OBJECTS = 4

# Side of an object's bounding square, as fractions of the image side (64 px
# images: 16-24 px objects, 2-3 patches of 8 px).
_OBJECT_FRAC = (16 / 64, 24 / 64)
_SCENE_STREAM = 2


class SceneSample(NamedTuple):
    r"""One captioned scene with per-object ground truth.

    Object slots beyond the scene's objects are padding, so that every sample
    of a dataset has the same shapes and ``default_collate`` batches them
    (captions become a tuple of strings).

    Attributes:
        image (Tensor): float image ``(3, H, W)``, values in ``[0, 1]`` before
            the dataset's ``transform``.
        caption (str): every object named with :func:`object_prompt`, in slot
            order, joined by ``" and "``, e.g. ``"a red disk and a blue ring"``.
        shapes (Tensor): int64 ``(K,)``, the shape (index into
            :data:`~captum_vit.data.CLASS_NAMES`) of each object slot; ``-1``
            on padding slots. ``K`` is the dataset's most objects.
        colours (Tensor): int64 ``(K,)``, the colour (index into
            :data:`COLOUR_NAMES`) of each object slot; ``-1`` on padding.
        masks (Tensor): bool ``(K, H, W)``, the exact pixels of each object;
            empty on padding slots. Masks of different objects never touch.
        boxes (Tensor): float ``(K, 4)``, the tight box of each mask, as in
            :class:`~captum_vit.data.Sample`; zeros on padding slots.
    """

    image: torch.Tensor
    caption: str
    shapes: torch.Tensor
    colours: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor


def object_prompt(shape: Optional[int] = None, colour: Optional[int] = None) -> str:
    r"""The text that names an object by its shape and/or colour.

    With both attributes it is ``"a {colour} {shape}"`` (the phrase the
    captions of :class:`SyntheticScenes` are made of); with one of them the
    other word is ``"object"`` (colour only) or left out (shape only). The
    article is ``"an"`` before a vowel (``"an orange ring"``).

    Args:
        shape (int, optional): index into :data:`~captum_vit.data.CLASS_NAMES`.
            Default: None
        colour (int, optional): index into :data:`COLOUR_NAMES`.
            Default: None

    Returns:
        str: ``"a red disk"`` (both), ``"a disk"`` (shape only) or
        ``"a red object"`` (colour only).

    Examples::

        >>> object_prompt(0, 0), object_prompt(shape=1), object_prompt(colour=2)
        ('a red disk', 'a square', 'a blue object')
    """
    if shape is None and colour is None:
        raise ValueError("give a shape, a colour or both")
    if shape is not None and not 0 <= int(shape) < len(CLASS_NAMES):
        raise ValueError(f"shape must be in [0, {len(CLASS_NAMES)}), got {shape}")
    if colour is not None and not 0 <= int(colour) < len(COLOUR_NAMES):
        raise ValueError(f"colour must be in [0, {len(COLOUR_NAMES)}), got {colour}")
    words = [] if colour is None else [COLOUR_NAMES[int(colour)]]
    words.append("object" if shape is None else CLASS_NAMES[int(shape)])
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article] + words)


def render_scene(
    rng: np.random.Generator,
    shapes: Union[Sequence[int], np.ndarray],
    colours: Union[Sequence[int], np.ndarray],
    image_size: int = 64,
) -> Tuple[np.ndarray, np.ndarray]:
    r"""Draw one scene: objects of the given shapes and colours, two to four
    distractors, on the clutter of the synthetic benchmark.

    Objects are squares of 16 to 24 px at 64 px (scaled with
    ``image_size``), placed uniformly at random where their bounding squares
    keep a gap to every other object; distractors take colours that no object
    has.

    Args:
        rng (numpy.random.Generator): the source of randomness; the scene is a
            deterministic function of its state.
        shapes (Sequence[int]): shape of each object, indices into
            :data:`~captum_vit.data.CLASS_NAMES`.
        colours (Sequence[int]): colour of each object, indices into
            :data:`COLOUR_NAMES`, pairwise different.
        image_size (int, optional): side of the square image in pixels.
            Default: 64

    Returns:
        tuple[ndarray, ndarray]: the image, float32 ``(3, S, S)`` in
        ``[0, 1]``, and the object masks, bool ``(len(shapes), S, S)``.

    Examples::

        >>> img, masks = render_scene(np.random.default_rng(0), [0, 4], [0, 2])
        >>> img.shape, masks.shape
        ((3, 64, 64), (2, 64, 64))
    """
    if len(shapes) != len(colours):
        raise ValueError(f"{len(shapes)} shapes but {len(colours)} colours")
    if not 1 <= len(shapes) <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(shapes)}")
    if len(set(int(c) for c in colours)) != len(colours):
        raise ValueError(f"object colours must differ, got {list(colours)}")
    for c in colours:
        if not 0 <= int(c) < len(COLOUR_NAMES):
            raise ValueError(f"colour must be in [0, {len(COLOUR_NAMES)}), got {c}")
    for label in shapes:
        if not 0 <= int(label) < len(CLASS_NAMES):
            raise ValueError(f"shape must be in [0, {len(CLASS_NAMES)}), got {label}")
    size = int(image_size)
    img = _clutter(rng, size)
    yy, xx = _grid(size)
    gap = max(2.0, size / 32)
    placed: List[_Box] = []
    masks = np.zeros((len(shapes), size, size), dtype=bool)
    for k, label in enumerate(shapes):
        scale = 1.0
        for attempt in range(200):
            if attempt and attempt % 50 == 0:  # crowded: try smaller objects
                scale *= 0.8
            half = rng.uniform(*_OBJECT_FRAC) * size * scale / 2
            cx = rng.uniform(half + 1, size - half - 1)
            cy = rng.uniform(half + 1, size - half - 1)
            box = (cx - half, cy - half, cx + half, cy + half)
            if not any(_boxes_overlap(box, other, gap) for other in placed):
                break
        else:  # pragma: no cover - 4 objects always fit at 64 px
            raise RuntimeError(f"no room for {len(shapes)} objects in {size} px")
        placed.append(box)
        masks[k] = _shape_mask(int(label), (xx - cx) / half, (yy - cy) / half)

    n = len(shapes)
    free = np.setdiff1d(np.arange(len(_PALETTE)), np.asarray(colours, dtype=int))
    distractor_colours = free[rng.integers(len(free), size=MAX_OBJECTS)]
    palette_index = np.concatenate([np.asarray(colours, dtype=int), distractor_colours])
    colour_rgb = _PALETTE[palette_index]
    colour_rgb = colour_rgb * rng.uniform(0.8, 1.0, size=(len(palette_index), 1))
    paint = np.full((size, size), -1, dtype=np.int8)
    _draw_distractors(rng, paint, placed, int(rng.integers(2, 5)), first=n)
    for k in range(n):
        paint[masks[k]] = k
    return _paint(rng, img, paint, colour_rgb.astype(np.float32)), masks


class SyntheticScenes(_SeededDataset):
    r"""Captioned scenes of one to a few coloured objects on the clutter of
    the synthetic benchmark, with exact per-object masks and boxes.

    For each scene, the number of objects is drawn from ``objects``, their
    shapes from :data:`~captum_vit.data.CLASS_NAMES` and their colours from
    :data:`COLOUR_NAMES` (pairwise different within a scene, in random
    order); the caption names every object, ``"a red disk and a blue
    square"``. Sample ``i`` is a deterministic function of
    ``(seed, split, i)``, drawn when read, on a random stream of its own (so
    the same index of :class:`~captum_vit.data.SyntheticObjects` is an
    unrelated image). See :mod:`captum_vit.data.scenes`.

    Serves two uses: image-caption pairs to train a CLIP-style model, and
    open-vocabulary localisation: for every object ``k`` of a sample,
    ``object_prompt(shapes[k], colours[k])`` names it and ``masks[k]`` is
    where it is.

    Args:
        n (int): number of scenes.
        seed (int, optional): seed of the dataset.
            Default: 0
        split (str, optional): ``"train"``, ``"val"`` or ``"test"``.
            Default: ``"test"``
        image_size (int, optional): side of the square images in pixels.
            Default: 64
        objects (int or tuple[int, int], optional): number of objects per
            scene, or the inclusive range it is drawn from (uniformly), at most
            :data:`MAX_OBJECTS`.
            Default: ``(1, 3)``
        transform (Callable, optional): applied to each image tensor.
            Default: None

    Examples::

        >>> ds = SyntheticScenes(100, seed=0)
        >>> s = ds[0]
        >>> s.caption
        'a ... and a ...'
        >>> k = 0  # the first object: its prompt and its mask
        >>> object_prompt(s.shapes[k], s.colours[k]), s.masks[k].shape
        ('a ...', torch.Size([64, 64]))
        >>> batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=32)))
        >>> batch.image.shape, len(batch.caption), batch.masks.shape
        (torch.Size([32, 3, 64, 64]), 32, torch.Size([32, 3, 64, 64]))
    """

    #: Names of the colours, by index.
    colours: Tuple[str, ...] = COLOUR_NAMES

    def __init__(
        self,
        n: int,
        seed: int = 0,
        split: str = "test",
        image_size: int = 64,
        objects: Union[int, Tuple[int, int]] = (1, 3),
        transform: Optional[Callable] = None,
    ) -> None:
        lo, hi = (objects, objects) if isinstance(objects, int) else objects
        if not 1 <= int(lo) <= int(hi) <= MAX_OBJECTS:
            raise ValueError(
                f"objects must be a count or range within [1, {MAX_OBJECTS}], "
                f"got {objects}"
            )
        super().__init__(n, seed, split, image_size, transform)
        self.objects = (int(lo), int(hi))

    @property
    def max_objects(self) -> int:
        """Number of object slots of every sample."""
        return self.objects[1]

    def __getitem__(self, index: int) -> SceneSample:
        index = self._index(index)
        rng = _rng(self.seed, self.split, index, stream=_SCENE_STREAM)
        count = int(rng.integers(self.objects[0], self.objects[1] + 1))
        shapes = rng.permutation(len(CLASS_NAMES))[:count]
        colours = rng.permutation(len(COLOUR_NAMES))[:count]
        img, masks = render_scene(rng, shapes, colours, self.image_size)
        k, size = self.max_objects, self.image_size
        shapes_t = torch.full((k,), -1, dtype=torch.int64)
        colours_t = torch.full((k,), -1, dtype=torch.int64)
        masks_t = torch.zeros(k, size, size, dtype=torch.bool)
        boxes_t = torch.zeros(k, 4)
        shapes_t[:count] = torch.from_numpy(shapes.astype(np.int64))
        colours_t[:count] = torch.from_numpy(colours.astype(np.int64))
        masks_t[:count] = torch.from_numpy(masks)
        for j in range(count):
            boxes_t[j] = box_from_mask(masks_t[j])
        caption = " and ".join(
            object_prompt(int(s), int(c)) for s, c in zip(shapes, colours)
        )
        image = self._transformed(torch.from_numpy(img))
        return SceneSample(image, caption, shapes_t, colours_t, masks_t, boxes_t)
