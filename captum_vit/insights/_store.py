"""The images the visualiser offers: the dataset's samples and the uploads.

Ids are ``d<i>`` for the i-th dataset sample and ``u<32 hex digits>`` for an
upload; nothing else is looked up (no id names a path). Uploads are decoded
safely (:func:`._images.decode_image`), letterboxed to the model's input and
kept in memory, the most recent ``max_uploads`` of them.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Sequence, Tuple

from torch import Tensor

from . import _images
from ._errors import InvalidArgument, NotFound, TooLarge
from ._images import Picture

_DATASET_ID = re.compile(r"d[0-9]{1,9}")
_UPLOAD_ID = re.compile(r"u[0-9a-f]{32}")


class ImageStore:
    """Dataset samples and uploads by id.

    Args:
        samples (list): ``(image, label)`` pairs, images ``(C, H, W)``.
        image_size (tuple of int): ``(H, W)`` uploads are letterboxed to.
        fill (sequence of float, optional): RGB of the letterbox bands (the
            normalisation mean). Default: None (grey)
        display (callable, optional): maps a dataset image for display.
            Default: None
        max_bytes (int, optional): largest upload. Default: 20 MiB
        max_pixels (int, optional): largest ``width * height`` of an upload.
            Default: 50 megapixels
        max_uploads (int, optional): uploads kept. Default: 32
    """

    def __init__(
        self,
        samples: List[Tuple[Tensor, Optional[int]]],
        image_size: Tuple[int, int],
        fill: Optional[Sequence[float]] = None,
        display: Optional[Callable[[Tensor], Any]] = None,
        max_bytes: int = 20 * 1024 * 1024,
        max_pixels: int = 8192 * 6144,
        max_uploads: int = 32,
    ) -> None:
        self.samples = samples
        self.image_size = image_size
        self.fill = fill
        self._display = display
        self.max_bytes = int(max_bytes)
        self.max_pixels = int(max_pixels)
        self.max_uploads = int(max_uploads)
        self._uploads: OrderedDict[str, Picture] = OrderedDict()
        self._lock = threading.Lock()

    def add_upload(self, data: bytes) -> str:
        """Decode an uploaded file and keep it; returns its id.

        Raises:
            TooLarge: over ``max_bytes``.
            InvalidArgument: not an image of an allowed format, corrupt, or
                beyond the pixel limit.
        """
        if len(data) > self.max_bytes:
            raise TooLarge(
                f"the upload is too large: the limit is {self.max_bytes} bytes"
            )
        try:
            arr = _images.decode_image(data, self.max_pixels)
        except _images.ImageDecodeError as e:
            raise InvalidArgument(str(e)) from None
        picture = _images.picture_of_upload(arr, self.image_size, self.fill)
        image_id = "u" + uuid.uuid4().hex
        with self._lock:
            self._uploads[image_id] = picture
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        return image_id

    def get(self, image_id: Any) -> Tuple[Picture, Optional[int]]:
        """``(picture, label)`` of ``d<i>`` or ``u<hex>`` (label None for uploads).

        Raises:
            InvalidArgument: not an image id. NotFound: no such image.
        """
        if not isinstance(image_id, str) or not image_id:
            raise InvalidArgument("'image' must be an image id such as 'd0'")
        if _DATASET_ID.fullmatch(image_id):
            i = int(image_id[1:])
            if i < len(self.samples):
                img, label = self.samples[i]
                return Picture(img, self._shown(img), None), label
        elif _UPLOAD_ID.fullmatch(image_id):
            with self._lock:
                if image_id in self._uploads:
                    return self._uploads[image_id], None
        raise NotFound(f"no image {image_id[:40]!r} (uploads are kept for a while)")

    def _shown(self, image: Tensor) -> Tensor:
        if self._display is not None:
            out = self._display(image)
            if isinstance(out, Tensor):
                return out
        return image
