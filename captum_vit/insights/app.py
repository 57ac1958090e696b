"""The visualiser object: data, models, computations, and the server's life."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .. import adapters
from ..adapters import Tracer
from ..attr import _registry
from . import _images, _methods
from ._features import Compose, collect_samples, normalisation_of
from ._jobs import Busy, JobTable, ReplicaPool

__all__ = ["AttributionVisualizer", "RequestError", "METRICS"]

#: Scores the page can compute: key -> (title, which direction is better).
METRICS: Dict[str, Tuple[str, str]] = {
    "deletion": ("Deletion AUC", "lower"),
    "insertion": ("Insertion AUC", "higher"),
    "perturbation_positive": ("Positive perturbation AUC", "lower"),
    "perturbation_negative": ("Negative perturbation AUC", "higher"),
}


_DATASET_ID = re.compile(r"d[0-9]{1,9}")


class RequestError(Exception):
    """A request the visualiser refuses: an HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


class AttributionVisualizer:
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
    changing the import.

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
        image_size (tuple of int, optional): ``(H, W)`` uploads are resized
            to. Default: None (the size of the first dataset image; required
            when the dataset is empty)
        max_samples (int, optional): dataset images offered. Default: 64
        top_k (int, optional): predictions shown. Default: 5
        replicas (int, optional): copies of each model (the model itself and
            ``replicas - 1`` deep copies): one runs at most one computation at
            a time, and background jobs use at most ``replicas - 1``, so the
            page stays responsive during a long job. Default: 2
        max_upload_bytes (int, optional): largest accepted upload.
            Default: 4 MiB
        max_upload_pixels (int, optional): largest accepted ``width * height``
            of an upload (decompression bombs are rejected from the header).
            Default: ``4096 * 4096``
        max_methods (int, optional): methods per explanation request.
            Default: 8
        request_timeout (float, optional): seconds a request waits for a free
            model replica before it is answered 503. Default: 120

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
        max_upload_bytes: int = 4 * 1024 * 1024,
        max_upload_pixels: int = 4096 * 4096,
        max_methods: int = 8,
        request_timeout: float = 120.0,
    ) -> None:
        if isinstance(models, nn.Module):
            models = [models]
        models = list(models)
        if not models:
            raise ValueError("give at least one model")
        self.models = models
        self._adapters = [adapters.get(m) for m in models]  # fails early
        self.classes = [str(c) for c in classes]
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
        self._vis_transform = getattr(feature, "visualization_transform", None)
        self.mean, self.std = normalisation_of(transform)
        self.model_names = (
            list(model_names)
            if model_names is not None
            else [type(m).__name__ for m in models]
        )
        if len(self.model_names) != len(models):
            raise ValueError("model_names must name every model")
        self.dataset = dataset
        self._samples = collect_samples(dataset, max_samples)
        if image_size is None:
            if not self._samples:
                raise ValueError("give image_size when the dataset is empty")
            image_size = tuple(self._samples[0][0].shape[-2:])
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.top_k = int(top_k)
        self.replicas = int(replicas)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_upload_pixels = int(max_upload_pixels)
        self.max_methods = int(max_methods)
        self.request_timeout = float(request_timeout)
        self.max_uploads = 32
        self._pools = [ReplicaPool(m, self.replicas) for m in models]
        self._uploads: OrderedDict[str, Tensor] = OrderedDict()
        self._uploads_lock = threading.Lock()
        self._jobs: Optional[JobTable] = None
        self._jobs_lock = threading.Lock()
        self._app = None
        self._server = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ server
    @property
    def app(self):
        """The Flask application (created on first use)."""
        if self._app is None:
            from ._server import create_app

            self._app = create_app(self)
        return self._app

    @property
    def jobs(self) -> JobTable:
        with self._jobs_lock:
            if self._jobs is None:
                self._jobs = JobTable(
                    workers=max(1, self.replicas - 1),
                    error_message=_job_error_message,
                )
            return self._jobs

    def serve(
        self,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        blocking: bool = True,
        debug: bool = False,
        bind_all: bool = False,
        quiet: bool = False,
    ) -> int:
        r"""Start the web server (threaded: requests are served concurrently).

        Args:
            host (str, optional): the address to bind. Keep the loopback
                default unless the machine's network is trusted: the page
                runs models on request. Default: ``"127.0.0.1"``
            port (int, optional): the port; None or 0 picks a free one.
                Default: None
            blocking (bool, optional): serve until interrupted (Ctrl-C);
                False serves from a background thread and returns at once
                (stop it with :meth:`stop`). Default: True
            debug (bool, optional): log the traceback of unexpected errors to
                the server's log (the client never receives one).
                Default: False
            bind_all (bool, optional): bind every interface (``0.0.0.0``), as
                Captum Insights' option. Default: False
            quiet (bool, optional): do not log each request. Default: False

        Returns:
            int: the port the server listens on.

        Examples::

            >>> port = vis.serve(blocking=False, quiet=True)
            >>> import urllib.request
            >>> urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config").status
            200
            >>> vis.stop()
        """
        from werkzeug.serving import WSGIRequestHandler, make_server

        if self._server is not None:
            raise RuntimeError("the visualiser is already serving; call stop()")
        if bind_all:
            host = "0.0.0.0"
        app = self.app
        app.config["CAPTUM_VIT_DEBUG"] = bool(debug)
        app.config["CAPTUM_VIT_LOOPBACK"] = host in ("127.0.0.1", "localhost", "::1")

        class Handler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):  # noqa: D401
                if not quiet:
                    super().log_request(*args, **kwargs)

        server = make_server(
            host, int(port or 0), app, threaded=True, request_handler=Handler
        )
        self._server = server
        bound = server.socket.getsockname()[1]
        self.port = bound
        shown = "127.0.0.1" if host == "0.0.0.0" else host
        if blocking:
            print(
                f"captum_vit insights: serving on http://{shown}:{bound}/ (Ctrl-C stops)",
                flush=True,
            )
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                self._shutdown_server()
            return bound
        self._thread = threading.Thread(
            target=server.serve_forever, name="captum-vit-insights", daemon=True
        )
        self._thread.start()
        return bound

    def stop(self) -> None:
        """Stop a server started with ``serve(blocking=False)``; idempotent."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.shutdown()
            thread.join(timeout=10)
        self._shutdown_server()

    def _shutdown_server(self) -> None:
        if self._server is not None:
            self._server.server_close()
        self._server = None
        self._thread = None
        with self._jobs_lock:
            if self._jobs is not None:
                self._jobs.shutdown()
            self._jobs = None

    @property
    def url(self) -> Optional[str]:
        """``http://host:port/`` of the running server, or None."""
        if self._server is None:
            return None
        host = self._server.host
        host = "127.0.0.1" if host == "0.0.0.0" else host
        return f"http://{host}:{self.port}/"

    # ------------------------------------------------------------ description
    def config(self) -> Dict[str, Any]:
        """What the page needs to build its controls."""
        models = []
        for name, ad in zip(self.model_names, self._adapters):
            models.append(
                {
                    "name": name,
                    "family": ad.family,
                    "num_layers": ad.num_layers,
                    "num_heads": ad.num_heads,
                }
            )
        return {
            "models": models,
            "classes": self.classes,
            "methods": [_methods.method_spec(n) for n in _registry.list_methods()],
            "metrics": [
                {"name": k, "title": t, "better": b} for k, (t, b) in METRICS.items()
            ],
            "image_size": list(self.image_size),
            "num_samples": len(self._samples),
            "top_k": self.top_k,
            "max_methods": self.max_methods,
            "max_upload_bytes": self.max_upload_bytes,
            "upload_formats": sorted(_images.ALLOWED_FORMATS),
        }

    def samples(self) -> List[Dict[str, Any]]:
        """The dataset images on offer: id, label and label name."""
        out = []
        for i, (_, label) in enumerate(self._samples):
            out.append(
                {
                    "id": f"d{i}",
                    "label": label,
                    "label_name": self._class_name(label),
                }
            )
        return out

    def _class_name(self, index: Optional[int]) -> Optional[str]:
        if index is None:
            return None
        if 0 <= index < len(self.classes):
            return self.classes[index]
        return str(index)

    # ------------------------------------------------------------------ images
    def add_upload(self, data: bytes) -> str:
        """Decode an uploaded file and keep it in memory; returns its id."""
        if len(data) > self.max_upload_bytes:
            raise RequestError(
                413, f"uploads are limited to {self.max_upload_bytes} bytes"
            )
        try:
            image = _images.decode_image(data, self.image_size, self.max_upload_pixels)
        except _images.ImageDecodeError as e:
            raise _bad(str(e)) from None
        image_id = "u" + uuid.uuid4().hex
        with self._uploads_lock:
            self._uploads[image_id] = image
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        return image_id

    def image(self, image_id: Any) -> Tuple[Tensor, Optional[int]]:
        """``(image, label)`` of a dataset image ``d<i>`` or an upload ``u<hex>``."""
        if not isinstance(image_id, str) or not image_id:
            raise _bad("'image' must be an image id such as 'd0'")
        if _DATASET_ID.fullmatch(image_id):
            i = int(image_id[1:])
            if i < len(self._samples):
                return self._samples[i]
        elif image_id[0] == "u":
            with self._uploads_lock:
                if image_id in self._uploads:
                    return self._uploads[image_id], None
        raise RequestError(
            404, f"no image {image_id[:40]!r} (uploads are kept for a while)"
        )

    def _display(self, image: Tensor) -> Tensor:
        if self._vis_transform is not None:
            out = self._vis_transform(image)
            if isinstance(out, Tensor):
                return out
        return image

    def image_png(self, image_id: str, scale: Optional[int] = None) -> bytes:
        """PNG bytes of an image as the page shows it."""
        image, _ = self.image(image_id)
        arr = _images.display_array(self._display(image))
        if scale is None:
            scale = _images.display_scale(arr.shape[:2], 128)
        return _images.png_bytes(arr, scale)

    def _model_input(self, image: Tensor) -> Tensor:
        x = image if self.transform is None else self.transform(image)
        x = x[None] if x.dim() == 3 else x
        return x.detach().float()

    # ----------------------------------------------------------- computations
    def _model_index(self, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad("'model' must be a model index (integer)")
        if not 0 <= value < len(self.models):
            raise _bad(
                f"model index {value} out of range for {len(self.models)} models"
            )
        return value

    def _target(self, value: Any, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad("'target' must be a class index (integer) or null")
        if not 0 <= value < len(self.classes):
            raise _bad(f"target {value} out of range for {len(self.classes)} classes")
        return value

    def _device(self, model: nn.Module) -> torch.device:
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def _logits(self, model: nn.Module, x: Tensor) -> Tensor:
        with torch.no_grad():
            return adapters.get(model).forward(x.to(self._device(model)))

    def predict(self, image_id: Any, model: Any = None) -> Dict[str, Any]:
        """Top-k predictions of a model for an image.

        Returns:
            dict: ``predictions`` (list of ``index``, ``label``, ``score``),
            ``label`` / ``label_name`` (the true class, if known).
        """
        m = self._model_index(model)
        image, label = self.image(image_id)
        x = self._model_input(image)
        with self._checkout(m) as replica:
            logits = self._logits(replica, x)
        return {
            "image": image_id,
            "model": m,
            "predictions": self._top_k(logits),
            "label": label,
            "label_name": self._class_name(label),
        }

    def _top_k(self, logits: Tensor) -> List[Dict[str, Any]]:
        scores = logits if self.score_func is None else self.score_func(logits)
        scores = scores.detach().float().cpu()[0]
        k = min(self.top_k, scores.numel())
        vals, idx = scores.topk(k)
        return [
            {"index": int(i), "label": self._class_name(int(i)), "score": float(v)}
            for v, i in zip(vals, idx)
        ]

    def _checkout(self, m: int):
        return _Checkout(self._pools[m], self.request_timeout)

    def _parse_methods(self, methods: Any) -> List[Dict[str, Any]]:
        if not isinstance(methods, list) or not methods:
            raise _bad("'methods' must be a non-empty list of method names or objects")
        if len(methods) > self.max_methods:
            raise _bad(f"at most {self.max_methods} methods per request")
        out = []
        for item in methods:
            if isinstance(item, str):
                name, params = item, {}
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                name, params = item["name"], item.get("params") or {}
                extra = set(item) - {"name", "params"}
                if extra:
                    raise _bad(f"unknown keys {sorted(extra)} in a method entry")
            else:
                raise _bad(
                    "each method must be a name or {'name': ..., 'params': {...}}"
                )
            try:
                init, attr = _methods.parse_params(name, params)
            except _methods.ParameterError as e:
                raise _bad(str(e)) from None
            defaults = {
                p["name"]: p["default"] for p in _methods.method_spec(name)["params"]
            }
            label = name + "".join(
                f" {k}={v}"
                for k, v in sorted({**init, **attr}.items())
                if k not in defaults or defaults[k] != v
            )
            out.append({"name": name, "init": init, "attr": attr, "label": label})
        return out

    def _attribute(
        self, replica: nn.Module, spec: Dict[str, Any], x: Tensor, target: int
    ) -> Tensor:
        name = spec["name"]
        try:
            method = _registry.create_method(name, replica, **spec["init"])
            return method.attribute(
                x.to(self._device(replica)), target=target, **spec["attr"]
            )
        except (ValueError, TypeError) as e:
            raise _bad(f"method {name!r}: {e}") from None
        except RequestError:
            raise
        except Exception as e:
            raise RequestError(
                422, f"method {name!r} failed: {type(e).__name__}: {e}"
            ) from None

    def explain(
        self, image_id: Any, methods: Any, target: Any = None, model: Any = None
    ) -> Dict[str, Any]:
        """Explain ``target`` with each method; one overlay PNG per method.

        Returns:
            dict: ``target``, ``target_name``, ``predictions`` and
            ``overlays`` (list of ``method``, ``label``, ``image`` (a PNG
            ``data:`` URL), ``seconds``).
        """
        m = self._model_index(model)
        specs = self._parse_methods(methods)
        image, _ = self.image(image_id)
        x = self._model_input(image)
        shown = self._display(image)
        overlays = []
        with self._checkout(m) as replica:
            logits = self._logits(replica, x)
            t = self._target(target, int(logits.argmax(-1)[0]))
            for spec in specs:
                t0 = time.perf_counter()
                attr = self._attribute(replica, spec, x, t)
                seconds = time.perf_counter() - t0
                arr = _images.overlay_array(shown, attr[0].cpu())
                png = _images.png_bytes(arr, _images.display_scale(arr.shape[:2]))
                overlays.append(
                    {
                        "method": spec["name"],
                        "label": spec["label"],
                        "image": _images.data_url(png),
                        "seconds": seconds,
                    }
                )
        return {
            "image": image_id,
            "model": m,
            "target": t,
            "target_name": self._class_name(t),
            "predictions": self._top_k(logits),
            "overlays": overlays,
        }

    def attention(
        self, image_id: Any, layer: Any = -1, model: Any = None, view: str = "row"
    ) -> Dict[str, Any]:
        """Raw attention of one layer, per head (and the head mean).

        Args:
            image_id (str): the image.
            layer (int, optional): the layer (negative counts from the end).
                Default: -1
            model (int, optional): the model index. Default: None (0)
            view (str, optional): ``"row"``: the explained token's attention
                over the patches (the class-token row, or the patch mean for
                average-pooled models) overlaid on the image; ``"matrix"``:
                the whole ``N x N`` attention matrix. Default: ``"row"``
        """
        m = self._model_index(model)
        if view not in ("row", "matrix"):
            raise _bad("'view' must be 'row' or 'matrix'")
        ad = self._adapters[m]
        L = ad.num_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer < L:
            raise _bad(f"'layer' must be an integer in [{-L}, {L - 1}]")
        layer = layer % L
        image, _ = self.image(image_id)
        x = self._model_input(image)
        with self._checkout(m) as replica:
            rad = adapters.get(replica)
            tracer = Tracer(layers=[layer])
            with torch.no_grad(), rad.trace(tracer):
                rad.forward(x.to(self._device(replica)))
            attn = tracer.attentions[layer][0].float().cpu()  # (H, N, N)
            grid = rad.grid_size(tuple(x.shape[-2:]))
            prefix = rad.num_prefix_tokens
            w = rad.pool_weights(attn.shape[-1], dtype=attn.dtype)
        shown = self._display(image)

        def render(a: Tensor) -> str:
            if view == "matrix":
                heat = _images.jet(_images.heat_array(a))
                arr = heat
                scale = _images.display_scale(arr.shape[:2], 160)
            else:
                row = (w @ a)[prefix:].reshape(grid)
                arr = _images.overlay_array(shown, row)
                scale = _images.display_scale(arr.shape[:2], 128)
            return _images.data_url(_images.png_bytes(arr, scale))

        return {
            "image": image_id,
            "model": m,
            "layer": layer,
            "num_layers": L,
            "num_heads": int(attn.shape[0]),
            "view": view,
            "heads": [render(attn[h]) for h in range(attn.shape[0])],
            "mean": render(attn.mean(0)),
        }

    def start_scores(
        self,
        image_id: Any,
        methods: Any,
        metrics: Any = None,
        target: Any = None,
        model: Any = None,
        n_steps: Any = 16,
    ) -> Dict[str, Any]:
        """Queue a job computing each method's scores; returns the job's state.

        The job's result: ``target``, ``metrics`` and ``rows`` (one per method:
        ``method``, ``label``, ``scores`` {metric: AUC}, ``curves`` {metric:
        {``x``, ``y``}}).
        """
        m = self._model_index(model)
        specs = self._parse_methods(methods)
        if metrics is None:
            metrics = list(METRICS)
        if (
            not isinstance(metrics, list)
            or not metrics
            or any(not isinstance(k, str) or k not in METRICS for k in metrics)
        ):
            raise _bad(f"'metrics' must be a non-empty list drawn from {list(METRICS)}")
        if (
            isinstance(n_steps, bool)
            or not isinstance(n_steps, int)
            or not 2 <= n_steps <= 256
        ):
            raise _bad("'n_steps' must be an integer in [2, 256]")
        image, _ = self.image(image_id)
        if target is not None:
            self._target(target, 0)
        x = self._model_input(image)
        total = len(specs) * (1 + len(metrics))

        def run(job) -> Dict[str, Any]:
            with self._pools[m].checkout() as replica:
                return self._scores(replica, job, x, specs, metrics, target, n_steps)

        job = self.jobs.submit("scores", total, run)
        return job.to_dict()

    def _scores(self, replica, job, x, specs, metrics, target, n_steps):
        from .. import metrics as M

        x = x.to(self._device(replica))
        ad = adapters.get(replica)
        logits = self._logits(replica, x)
        t = self._target(target, int(logits.argmax(-1)[0]))
        ph, pw = ad.patch_size
        patch = ph if ph == pw else None
        forward = ad.forward
        rows = []
        for spec in specs:
            attr = self._attribute(replica, spec, x, t)
            job.step(f"{spec['label']}: attribution")
            row = {
                "method": spec["name"],
                "label": spec["label"],
                "scores": {},
                "curves": {},
            }
            for key in metrics:
                with torch.no_grad():
                    if key in ("deletion", "insertion"):
                        fn = M.deletion_auc if key == "deletion" else M.insertion_auc
                        res = fn(
                            forward,
                            x,
                            attr,
                            target=t,
                            n_steps=n_steps,
                            patch_size=patch,
                        )
                    else:
                        mode = key.split("_")[1]
                        res = M.perturbation_test(
                            forward,
                            x,
                            attr,
                            target=t,
                            mode=mode,
                            mean=self.mean,
                            std=self.std,
                        )
                row["scores"][key] = float(res.auc[0])
                row["curves"][key] = {
                    "x": [float(v) for v in res.fractions.cpu()],
                    "y": [float(v) for v in res.curve[0].cpu()],
                }
                job.step(f"{spec['label']}: {METRICS[key][0]}")
            rows.append(row)
        return {
            "target": t,
            "target_name": self._class_name(t),
            "metrics": [
                {"name": k, "title": METRICS[k][0], "better": METRICS[k][1]}
                for k in metrics
            ],
            "rows": rows,
        }

    def job(self, job_id: Any) -> Dict[str, Any]:
        """The state of a job (see :meth:`start_scores`)."""
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise RequestError(404, "no such job")
        return job.to_dict()


class _Checkout:
    """``with`` a replica, answering 503 when none frees up in time."""

    def __init__(self, pool: ReplicaPool, timeout: float) -> None:
        self._cm = pool.checkout(timeout)

    def __enter__(self) -> nn.Module:
        try:
            return self._cm.__enter__()
        except Busy as e:
            raise RequestError(503, str(e)) from None

    def __exit__(self, *exc) -> bool:
        return self._cm.__exit__(*exc)


def _job_error_message(e: BaseException) -> str:
    if isinstance(e, RequestError):
        return e.message
    return f"{type(e).__name__}: {e}"
