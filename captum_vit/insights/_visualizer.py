"""The visualiser as a domain object: models, images, and what it computes.

No HTTP here: :class:`AttributionVisualizer` takes Captum Insights' arguments,
keeps the dataset images and the uploads, and computes predictions,
explanations (through :func:`captum_vit.attr.create_method`), per-head
attention and scores (through :mod:`captum_vit.metrics`). It raises the
exceptions of :mod:`._errors`; :mod:`._http` turns them into answers, and
:meth:`AttributionVisualizer.serve` hands the object to :mod:`._server`.
"""

from __future__ import annotations

import threading
import time
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor, nn

from . import _core_api, _images, _methods
from ._errors import InsightsError, InvalidArgument, MethodFailed, NotFound
from ._features import Compose, collect_samples, normalisation_of
from ._images import Picture
from ._jobs import Budget, Job, JobTable, ReplicaPool, running_under
from ._methods import MethodCall
from ._scores import metric_names, metric_table, score_row
from ._serving import Serving
from ._store import ImageStore

__all__ = ["AttributionVisualizer"]

#: Methods ticked when the page opens: fast ones (never ATMAN or
#: AttentionFlow, which take seconds to minutes on a large model).
PRESELECTED = ("rollout", "grad_sam")

#: Most prompts, and the longest prompt, a request of a vision-language
#: model may carry.
MAX_PROMPTS, MAX_PROMPT_CHARS = 64, 200


def _index(value: Any, count: int, field: str, what: str, default: int) -> int:
    """``value`` as an index below ``count`` (None: ``default``)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field!r} must be {what} (integer) or null")
    if not 0 <= value < count:
        raise InvalidArgument(
            f"{field} {value} is out of range: {what} must be in [0, {count - 1}]"
        )
    return value


class AttributionVisualizer(Serving):
    r"""A web page to explore Vision-Transformer explanations: Captum Insights'
    role, for the methods of :mod:`captum_vit` (Captum 0.9 removed Insights).

    The page lets a person pick an image of ``dataset`` (or upload one), shows
    the model's top-k predictions, explains the chosen class with several
    methods of :func:`captum_vit.attr.list_methods` side by side (with their
    parameters), browses the raw attention of every layer and head, and
    computes per-method scores (deletion / insertion AUC, positive / negative
    perturbation AUC of :mod:`captum_vit.metrics`) as background jobs with a
    progress bar. The constructor takes Captum Insights' arguments, so code
    written for ``captum.insights.AttributionVisualizer`` can switch by
    changing the import. In Jupyter, :meth:`render` shows the page inline.

    Uploads keep their aspect ratio: the model sees the picture resized to fit
    ``image_size`` and padded with the normalisation mean (letterbox, nothing
    cropped), and the maps are drawn over the picture itself.

    Args:
        models (torch.nn.Module or list of torch.nn.Module): one or more stock
            Vision Transformers (timm, Hugging Face, torchvision). Each is used
            as it is (not put in eval mode, not modified).
        classes (list of str): class names, by output index.
        dataset (Dataset or iterable of Batch, optional): the images to pick
            from: a map-style dataset whose items are ``(image, label, ...)``
            tuples (for example :class:`captum_vit.data.SyntheticObjects`) or
            images, or Captum Insights' iterable of :class:`Batch`. Images are
            ``(C, H, W)`` tensors before ``input_transforms`` (normally in
            ``[0, 1]``). Only the first ``max_samples`` are offered.
            Default: None
        score_func (callable, optional): applied to the model's output to get
            the class scores shown as predictions (e.g. a softmax). If None,
            the outputs are shown as they are, as in Captum Insights.
            Default: None
        features (ImageFeature or list of one ImageFeature, optional): the
            image feature; its ``input_transforms`` map an image to the model's
            input and its ``visualization_transform`` (if any) maps it for
            display. Captum Insights' ``ImageFeature`` is accepted too.
            Default: None
        use_label_for_attr (bool, optional): accepted for compatibility with
            Captum Insights; explanations always take the chosen class.
            Default: True
        transform (callable, optional): maps an image ``(C, H, W)`` to the
            model's input; overrides ``features``' ``input_transforms``.
            Default: None
        model_names (list of str, optional): names shown for the models.
            Default: None (class names)
        image_size (tuple of int, optional): ``(H, W)`` of the model input
            uploads are letterboxed to. Default: None (the size of the first
            dataset image; required when the dataset is empty)
        max_samples (int, optional): dataset images offered. Default: 64
        top_k (int, optional): predictions shown. Default: 5
        replicas (int, optional): copies of each model (the model itself and
            ``replicas - 1`` deep copies): one runs at most one computation at
            a time, and background jobs use at most ``replicas - 1``, so the
            page stays responsive during a long job. Default: 2
        max_upload_bytes (int, optional): largest accepted upload (a phone
            camera's JPEG is 3-12 MB). Default: 20 MiB
        max_upload_pixels (int, optional): largest accepted ``width * height``
            of an upload (decompression bombs are rejected from the header).
            Default: ``8192 * 6144`` (50 megapixels)
        max_methods (int, optional): methods per explanation request.
            Default: 8
        request_timeout (float, optional): seconds a computation waits for a
            free model replica before it is refused as busy. Default: 120
        time_budget (float, optional): seconds an interactive computation
            (predict, explain, attention) may take, waiting included, before
            it is stopped at its next module call. Default: 60
        job_time_budget (float, optional): the same for a score job.
            Default: 600
        int_limits (dict, optional): bounds ``(low, high)`` of integer method
            parameters by name, over :data:`captum_vit.insights._methods.
            INT_LIMITS` (e.g. ``{"steps": (1, 200)}``). Default: None
        preselected (sequence of str, optional): methods ticked when the page
            opens. Default: ``("rollout", "grad_sam")``
        tokenizer (callable, optional): the tokenizer of vision-language
            models (open_clip, Hugging Face CLIP/SigLIP with their text
            tower). With it the page has a prompt box: the "classes" are the
            prompts (``classes`` gives the first ones), predictions score the
            image against them (``score_func`` of the similarity logits, e.g.
            a softmax over the prompts) and every method explains the chosen
            prompt, through :func:`captum_vit.text_similarity`. Default: None

    Examples::

        >>> import torch
        >>> import captum_vit.zoo as zoo
        >>> from captum_vit.data import SyntheticObjects
        >>> from captum_vit.insights import AttributionVisualizer
        >>> model, transform, classes, meta = zoo.load()
        >>> vis = AttributionVisualizer(
        ...     models=[model],
        ...     classes=classes,
        ...     dataset=SyntheticObjects(32, seed=1),
        ...     score_func=lambda out: out.softmax(-1),
        ...     transform=transform,
        ... )
        >>> vis.serve(port=8050)  # blocks; open http://127.0.0.1:8050/
        >>> port = vis.serve(port=0, blocking=False)  # in a thread
        >>> vis.stop()
        >>> vis.render()  # in Jupyter: the page inline
    """

    def __init__(
        self,
        models: Union[nn.Module, Sequence[nn.Module]],
        classes: Sequence[str],
        dataset: Any = None,
        score_func: Optional[Callable[[Tensor], Tensor]] = None,
        features: Any = None,
        use_label_for_attr: bool = True,
        *,
        transform: Optional[Callable[[Tensor], Tensor]] = None,
        model_names: Optional[Sequence[str]] = None,
        image_size: Optional[Tuple[int, int]] = None,
        max_samples: int = 64,
        top_k: int = 5,
        replicas: int = 2,
        max_upload_bytes: int = 20 * 1024 * 1024,
        max_upload_pixels: int = 8192 * 6144,
        max_methods: int = 8,
        request_timeout: float = 120.0,
        time_budget: float = 60.0,
        job_time_budget: float = 600.0,
        int_limits: Optional[Mapping[str, Tuple[int, int]]] = None,
        preselected: Sequence[str] = PRESELECTED,
        tokenizer: Any = None,
    ) -> None:
        if isinstance(models, nn.Module):
            models = [models]
        models = list(models)
        if not models:
            raise ValueError("give at least one model")
        self.models = models
        self._info = [_core_api.model_info(m) for m in models]  # fails early
        self.classes = [str(c) for c in classes]
        self.tokenizer = tokenizer
        if tokenizer is not None:
            self.classes = self._prompts(self.classes)
            for m in models:  # fails early: a model without text tower
                _core_api.text_similarity(m, self.classes[:1], tokenizer)
        self.score_func = score_func
        self.use_label_for_attr = use_label_for_attr
        if features is not None and not isinstance(features, (list, tuple)):
            features = [features]
        self.features = list(features) if features is not None else []
        if len(self.features) > 1:
            raise ValueError(
                "the visualiser explains one image input; got "
                f"{len(self.features)} features"
            )
        feature = self.features[0] if self.features else None
        if transform is None and feature is not None:
            ts = list(getattr(feature, "input_transforms", []) or [])
            transform = Compose(ts) if ts else None
        self.transform = transform
        self.mean, self.std = normalisation_of(transform)
        self.model_names = (
            list(model_names)
            if model_names is not None
            else [type(m).__name__ for m in models]
        )
        if len(self.model_names) != len(models):
            raise ValueError("model_names must name every model")
        self.dataset = dataset
        samples = collect_samples(dataset, max_samples)
        if image_size is None:
            if not samples:
                raise ValueError("give image_size when the dataset is empty")
            h, w = samples[0][0].shape[-2:]
            image_size = (int(h), int(w))
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.top_k = int(top_k)
        self.replicas = int(replicas)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_upload_pixels = int(max_upload_pixels)
        self.max_methods = int(max_methods)
        self.request_timeout = float(request_timeout)
        self.time_budget = float(time_budget)
        self.job_time_budget = float(job_time_budget)
        self.int_limits = dict(int_limits or {})
        # the methods that apply to every served model (a Swin has fewer)
        self.methods = [
            n
            for n in _core_api.list_methods()
            if all(n in _core_api.list_methods(model=m) for m in models)
        ]
        self.preselected = [m for m in preselected if m in self.methods]
        self._store = ImageStore(
            samples,
            self.image_size,
            self.mean,
            getattr(feature, "visualization_transform", None),
            self.max_upload_bytes,
            self.max_upload_pixels,
        )
        self._pools = [ReplicaPool(m, self.replicas) for m in models]
        self._jobs: Optional[JobTable] = None
        self._jobs_lock = threading.Lock()
        self._server: Any = None
        self._app: Any = None

    # ------------------------------------------------------------ description
    def config(self) -> Dict[str, Any]:
        """What the page needs to build its controls."""
        return {
            "models": [
                {
                    "name": name,
                    "family": info.family,
                    "num_layers": info.num_layers,
                    "num_heads": info.num_heads,
                }
                for name, info in zip(self.model_names, self._info)
            ],
            "classes": self.classes,
            "text": self.tokenizer is not None,
            "max_prompts": MAX_PROMPTS,
            "methods": [
                _methods.method_spec(n, self.int_limits)
                for n in self.methods
            ],
            "preselected": self.preselected,
            "metrics": metric_table(),
            "image_size": list(self.image_size),
            "num_samples": len(self._store.samples),
            "top_k": self.top_k,
            "max_methods": self.max_methods,
            "max_upload_bytes": self.max_upload_bytes,
            "upload_formats": sorted(_images.ALLOWED_FORMATS),
            "time_budget": self.time_budget,
        }

    def samples(self) -> List[Dict[str, Any]]:
        """The dataset images on offer: id, label and label name."""
        return [
            {"id": f"d{i}", "label": label, "label_name": self._class_name(label)}
            for i, (_, label) in enumerate(self._store.samples)
        ]

    def _class_name(
        self, index: Optional[int], names: Optional[Sequence[str]] = None
    ) -> Optional[str]:
        names = self.classes if names is None else names
        if index is None:
            return None
        if 0 <= index < len(names):
            return names[index]
        return str(index)

    def _prompts(self, value: Any) -> List[str]:
        """The prompts of a request (None: the configured ones), checked."""
        if value is None:
            return list(self.classes)
        if (
            not isinstance(value, (list, tuple))
            or not value
            or len(value) > MAX_PROMPTS
            or not all(isinstance(p, str) and p.strip() for p in value)
        ):
            raise InvalidArgument(
                f"'prompts' must be a list of 1 to {MAX_PROMPTS} non-empty strings"
            )
        if any(len(p) > MAX_PROMPT_CHARS for p in value):
            raise InvalidArgument(f"a prompt is longer than {MAX_PROMPT_CHARS} chars")
        return [p.strip() for p in value]

    def _names(self, prompts: Any) -> List[str]:
        """The output names of a request: its prompts, or the classes."""
        if self.tokenizer is None:
            if prompts is not None:
                raise InvalidArgument("'prompts': this model has no text tower")
            return self.classes
        return self._prompts(prompts)

    def _scorer(self, replica: nn.Module, names: List[str]) -> Any:
        """What is explained: the replica, or its similarity to the prompts."""
        if self.tokenizer is None:
            return replica
        try:
            return _core_api.text_similarity(replica, names, self.tokenizer)
        except ValueError as e:
            raise InvalidArgument(f"prompts: {e}") from None

    # ------------------------------------------------------------------ images
    def add_upload(self, data: bytes) -> str:
        """Decode an uploaded file and keep it in memory; returns its id.

        Raises:
            TooLarge: over ``max_upload_bytes``.
            InvalidArgument: not an image of an allowed format, corrupt, or
                beyond the pixel limit.
        """
        return self._store.add_upload(data)

    def image(self, image_id: Any) -> Tuple[Picture, Optional[int]]:
        """``(picture, label)`` of a dataset image ``d<i>`` or an upload
        ``u<hex>`` (label None for uploads).

        Raises:
            InvalidArgument: not an image id. NotFound: no such image.
        """
        return self._store.get(image_id)

    def image_png(self, image_id: Any, scale: Optional[int] = None) -> bytes:
        """PNG bytes of an image as the page shows it (uploads in their own
        aspect ratio)."""
        picture, _ = self.image(image_id)
        arr = _images.display_array(picture.display)
        if scale is None:
            scale = _images.display_scale(arr.shape[:2], 128)
        return _images.png_bytes(arr, scale)

    def model_input(self, image_id: Any) -> Tensor:
        """The ``(1, C, H, W)`` tensor the models receive for an image."""
        return self._model_input(self.image(image_id)[0])

    def _model_input(self, picture: Picture) -> Tensor:
        image = picture.input
        x = image if self.transform is None else self.transform(image)
        x = x[None] if x.dim() == 3 else x
        return x.detach().float()

    # ----------------------------------------------------------- arguments
    def _model_index(self, value: Any) -> int:
        return _index(value, len(self.models), "model", "a model index", 0)

    def _target(
        self, value: Any, default: int, names: Optional[Sequence[str]] = None
    ) -> int:
        count = len(self.classes if names is None else names)
        what = "a class index" if self.tokenizer is None else "a prompt index"
        return _index(value, count, "target", what, default)

    def _calls(self, methods: Any) -> List[MethodCall]:
        if (
            isinstance(methods, MethodCall)
            or not isinstance(methods, (list, tuple))
            or not methods
        ):
            raise InvalidArgument(
                "'methods' must be a non-empty list of method names or objects"
            )
        if len(methods) > self.max_methods:
            raise InvalidArgument(f"at most {self.max_methods} methods per request")
        return [
            m
            if isinstance(m, MethodCall)
            else _methods.parse_call(m, None, self.int_limits)
            for m in methods
        ]

    # ----------------------------------------------------------- computations
    def _device(self, model: Any) -> torch.device:
        model = getattr(model, "model", model)  # a similarity: its model
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def _logits(self, model: Any, x: Tensor) -> Tensor:
        with torch.no_grad():
            return _core_api.forward_func(model)(x.to(self._device(model)))

    def _checkout(self, m: int, budget: Optional[Budget]) -> ContextManager[nn.Module]:
        timeout = self.request_timeout
        left = None if budget is None else budget.remaining()
        if left is not None:
            timeout = min(timeout, left)
        return self._pools[m].checkout(timeout)

    def predict(
        self,
        image: Any,
        model: Any = None,
        budget: Optional[Budget] = None,
        prompts: Any = None,
    ) -> Dict[str, Any]:
        """Top-k predictions of a model for an image.

        Args:
            image (str): an image id (:meth:`samples`, :meth:`add_upload`).
            model (int, optional): the model index. Default: None (0)
            budget (Budget, optional): when to stop (time, client gone).
                Default: None
            prompts (list of str, optional): the prompts of a
                vision-language model (see ``tokenizer``). Default: None (the
                configured ones)

        Returns:
            dict: ``predictions`` (list of ``index``, ``label``, ``score``),
            ``label`` / ``label_name`` (the true class, if known).
        """
        m = self._model_index(model)
        names = self._names(prompts)
        picture, label = self.image(image)
        x = self._model_input(picture)
        with self._checkout(m, budget) as replica, running_under(budget):
            logits = self._logits(self._scorer(replica, names), x)
        return {
            "image": image,
            "model": m,
            "predictions": self._top_k(logits, names),
            "label": label,
            "label_name": self._class_name(label),
        }

    def _top_k(
        self, logits: Tensor, names: Optional[Sequence[str]] = None
    ) -> List[Dict[str, Any]]:
        scores = logits if self.score_func is None else self.score_func(logits)
        scores = scores.detach().float().cpu()[0]
        k = min(self.top_k, scores.numel())
        vals, idx = scores.topk(k)
        return [
            {
                "index": int(i),
                "label": self._class_name(int(i), names),
                "score": float(v),
            }
            for v, i in zip(vals, idx)
        ]

    def _attribute(
        self, replica: Any, call: MethodCall, x: Tensor, target: int
    ) -> Tensor:
        try:
            method = _core_api.create_method(call.name, replica, **call.init)
            return method.attribute(
                x.to(self._device(replica)), target=target, **call.attr
            )
        except InsightsError:
            raise
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"method {call.name!r}: {e}") from None
        except Exception as e:
            raise MethodFailed(
                f"method {call.name!r} failed: {type(e).__name__}: {e}"
            ) from None

    def explain(
        self,
        image: Any,
        methods: Sequence[Union[str, MethodCall]],
        target: Any = None,
        model: Any = None,
        budget: Optional[Budget] = None,
        prompts: Any = None,
    ) -> Dict[str, Any]:
        """Explain ``target`` with each method; one overlay PNG per method.

        Args:
            image (str): an image id.
            methods (list): method names, or :class:`MethodCall` s with
                parameters (``_methods.parse_call(name, params)``).
            target (int, optional): the class. Default: None (predicted)
            model (int, optional): the model index. Default: None (0)
            budget (Budget, optional): when to stop. Default: None
            prompts (list of str, optional): the prompts of a vision-language
                model; ``target`` indexes them. Default: None (the configured
                ones)

        Returns:
            dict: ``target``, ``target_name``, ``predictions`` and
            ``overlays`` (list of ``method``, ``label``, ``image`` (a PNG
            ``data:`` URL, over the picture in its own aspect ratio),
            ``seconds``).
        """
        m = self._model_index(model)
        calls = self._calls(methods)
        names = self._names(prompts)
        picture, _ = self.image(image)
        x = self._model_input(picture)
        overlays = []
        with self._checkout(m, budget) as replica, running_under(budget):
            scorer = self._scorer(replica, names)
            logits = self._logits(scorer, x)
            t = self._target(target, int(logits.argmax(-1)[0]), names)
            for call in calls:
                t0 = time.perf_counter()
                attr = self._attribute(scorer, call, x, t)
                seconds = time.perf_counter() - t0
                arr = _images.overlay_array(
                    picture.display, attr[0].detach().cpu(), box=picture.box
                )
                png = _images.png_bytes(arr, _images.display_scale(arr.shape[:2]))
                overlays.append(
                    {
                        "method": call.name,
                        "label": call.label,
                        "image": _images.data_url(png),
                        "seconds": seconds,
                    }
                )
        return {
            "image": image,
            "model": m,
            "target": t,
            "target_name": self._class_name(t, names),
            "predictions": self._top_k(logits, names),
            "overlays": overlays,
        }

    def attention(
        self,
        image: Any,
        layer: Any = -1,
        model: Any = None,
        view: str = "row",
        budget: Optional[Budget] = None,
    ) -> Dict[str, Any]:
        """Raw attention of one layer, per head (and the head mean).

        Args:
            image (str): the image id.
            layer (int, optional): the layer (negative counts from the end).
                Default: -1
            model (int, optional): the model index. Default: None (0)
            view (str, optional): ``"row"``: the explained token's attention
                over the patches (the class-token row, or the patch mean for
                average-pooled models) overlaid on the image; ``"matrix"``:
                the whole ``N x N`` attention matrix. Default: ``"row"``
            budget (Budget, optional): when to stop. Default: None
        """
        m = self._model_index(model)
        if view not in ("row", "matrix"):
            raise InvalidArgument("'view' must be 'row' or 'matrix'")
        L = self._info[m].num_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer < L:
            raise InvalidArgument(f"'layer' must be an integer in [{-L}, {L - 1}]")
        layer = layer % L
        picture, _ = self.image(image)
        x = self._model_input(picture)
        with self._checkout(m, budget) as replica, running_under(budget):
            maps = _core_api.attention_maps(replica, x.to(self._device(replica)), layer)

        def render(row: Tensor, matrix: Tensor) -> str:
            if view == "matrix":
                arr = _images.jet(_images.heat_array(matrix))
                scale = _images.display_scale(arr.shape[:2], 160)
            else:
                arr = _images.overlay_array(picture.display, row, box=picture.box)
                scale = _images.display_scale(arr.shape[:2], 128)
            return _images.data_url(_images.png_bytes(arr, scale))

        heads = maps.rows.shape[0]
        return {
            "image": image,
            "model": m,
            "layer": layer,
            "num_layers": L,
            "num_heads": int(heads),
            "view": view,
            "heads": [render(maps.rows[h], maps.matrices[h]) for h in range(heads)],
            "mean": render(maps.rows.mean(0), maps.matrices.mean(0)),
        }

    # ------------------------------------------------------------------ jobs
    @property
    def jobs(self) -> JobTable:
        """The table of score jobs (created on first use)."""
        with self._jobs_lock:
            if self._jobs is None:
                self._jobs = JobTable(workers=max(1, self.replicas - 1))
            return self._jobs

    def start_scores(
        self,
        image: Any,
        methods: Sequence[Union[str, MethodCall]],
        metrics: Any = None,
        target: Any = None,
        model: Any = None,
        n_steps: Any = 16,
        prompts: Any = None,
    ) -> Dict[str, Any]:
        """Queue a job computing each method's scores; returns the job's state.

        The job runs under ``job_time_budget`` and is cancelled when nobody
        polls it for 30 s (the page has gone). Its result: ``target``,
        ``metrics`` and ``rows`` (one per method: ``method``, ``label``,
        ``scores`` {metric: AUC}, ``curves`` {metric: {``x``, ``y``}}).
        """
        m = self._model_index(model)
        calls = self._calls(methods)
        names = metric_names(metrics)
        outputs = self._names(prompts)
        if (
            isinstance(n_steps, bool)
            or not isinstance(n_steps, int)
            or not 2 <= n_steps <= 256
        ):
            raise InvalidArgument("'n_steps' must be an integer in [2, 256]")
        picture, _ = self.image(image)
        if target is not None:
            self._target(target, 0, outputs)
        x = self._model_input(picture)
        total = len(calls) * (1 + len(names))

        def run(job: Job) -> Dict[str, Any]:
            with self._checkout(m, job.budget) as replica:
                scorer = self._scorer(replica, outputs)
                return self._scores(
                    scorer, job, x, calls, names, target, n_steps, outputs
                )

        job = self.jobs.submit("scores", total, run, seconds=self.job_time_budget)
        return job.to_dict()

    def _scores(
        self,
        replica: Any,
        job: Job,
        x: Tensor,
        calls: List[MethodCall],
        names: List[str],
        target: Optional[int],
        n_steps: int,
        outputs: Optional[List[str]] = None,
    ) -> Dict[str, Any]:
        x = x.to(self._device(replica))
        logits = self._logits(replica, x)
        t = self._target(target, int(logits.argmax(-1)[0]), outputs)
        rows = []
        for call in calls:
            attr = self._attribute(replica, call, x, t)
            job.step(f"{call.label}: attribution")

            def step(key: str, label: str = call.label) -> None:
                job.step(f"{label}: {key.replace('_', ' ')}")

            row = score_row(
                replica, x, attr, t, names, n_steps, self.mean, self.std, step
            )
            rows.append({"method": call.name, "label": call.label, **row})
        return {
            "target": t,
            "target_name": self._class_name(t, outputs),
            "metrics": metric_table(names),
            "rows": rows,
        }

    def job(self, job_id: Any) -> Dict[str, Any]:
        """The state of a job (see :meth:`start_scores`)."""
        return self._job(job_id).to_dict()

    def cancel_job(self, job_id: Any) -> Dict[str, Any]:
        """Cancel a job: it stops at its next module call and frees its model
        replica. Returns its state."""
        job = self._job(job_id)
        job.cancel()
        return job.to_dict()

    def _stop_jobs(self) -> None:
        with self._jobs_lock:
            if self._jobs is not None:
                self._jobs.shutdown()
            self._jobs = None

    def _job(self, job_id: Any) -> Job:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFound("no such job")
        return job

    def __enter__(self) -> AttributionVisualizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
