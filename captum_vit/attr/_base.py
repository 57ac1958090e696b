"""The shared base of every captum_vit method (token-to-pixel mapping: ``_maps``).

:class:`ViTAttribution` derives from :class:`captum.attr.Attribution` and fixes
the contract of the package:

* ``attribute(inputs, target=None, additional_forward_args=None,
  output="input", internal_batch_size=None)`` with Captum's argument names
  (``internal_batch_size``: at most that many images, or perturbed copies
  of an image, per forward pass; the maps do not depend on it);
* the default output has the input's shape ``(B, C, H, W)`` (the patch map is
  upsampled bilinearly, as Chefer et al.'s evaluation does, and repeated over
  channels) so :func:`captum.metrics.infidelity`,
  :func:`captum.metrics.sensitivity_max`, :class:`captum.attr.NoiseTunnel` and
  :mod:`captum.attr.visualization` accept it unchanged;
* ``output="tokens"`` returns the patch grid ``(B, gh, gw)``; prefix tokens
  (class, distillation, register) never appear in a map;
* ``target=None`` explains the predicted class;
* maps have the input's dtype, except for half-precision inputs (float16,
  bfloat16), whose maps are float32: the methods accumulate softmax,
  relevance and rollout products in float32, and a half-precision map would
  round that away (bfloat16 keeps 8 significant bits); methods that cannot
  meet the documented tolerance in half precision refuse it
  (:attr:`ViTAttribution._half_dtypes`, ``docs/performance.rst``);
* a sample's result never depends on the rest of its batch;
* the model is left exactly as it was (see :meth:`ViTAdapter.trace`).
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional, Sequence, Tuple, TypeVar, Union

import torch
from captum.attr import Attribution
from torch import Tensor, nn

from .. import adapters
from .._batching import check_internal_batch_size, chunks, select_rows
from .._compat import _format_additional_forward_args, log_usage
from .._maps import pixels_to_tokens, tokens_to_pixels
from .._targets import TargetType, format_target
from ..adapters import TokenGraph, Tracer, ViTAdapter

__all__ = [
    "ViTAttribution",
    "GraphAttribution",
    "CopiesAttribution",
    "tokens_to_pixels",
    "fuse_heads",
    "check_choice",
    "check_head_fusion",
]

_HALF = (torch.float16, torch.bfloat16)
_T = TypeVar("_T")

#: why the LRP-rule methods refuse half precision (their ``_half_refusal``)
RELEVANCE_IN_HALF = (
    "its relevance rules divide by every layer's outputs, which float16 and "
    "bfloat16 keep to 11 or 8 significant bits: the map then loses its "
    "correlation with the float32 map, or flips sign (docs/performance.rst, "
    "Half precision)"
)
#: why the perturbation methods refuse half precision
OUTPUTS_IN_HALF = (
    "its map is made of differences of the model's outputs on perturbed "
    "inputs, and a float16 or bfloat16 model's outputs keep 11 or 8 "
    "significant bits: differences below that are lost (docs/performance.rst, "
    "Half precision)"
)

_OUTPUTS = ("input", "tokens")
_HEAD_FUSIONS = ("mean", "max", "min")


def check_choice(name: str, value: _T, choices: Sequence[Any]) -> _T:
    """Return ``value``; raise ``ValueError`` unless it is one of
    ``choices`` (a method option such as ``query`` or ``head_fusion``).

    Args:
        name (str): the option's name, for the message.
        value (Any): what was given.
        choices (sequence): the accepted values, shown in the message.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_head_fusion(head_fusion: str) -> str:
    """Raise ``ValueError`` unless ``head_fusion`` is mean, max or min."""
    return check_choice("head_fusion", head_fusion, _HEAD_FUSIONS)


def fuse_heads(attn: Tensor, head_fusion: str = "mean", dim: int = 1) -> Tensor:
    """Fuse the head axis of an attention tensor by mean, max or min.

    Args:
        attn (Tensor): attention-like tensor, heads along ``dim``.
        head_fusion (str, optional): ``"mean"``, ``"max"`` or ``"min"``.
            Default: ``"mean"``
        dim (int, optional): the head axis. Default: 1
    """
    if head_fusion == "mean":
        return attn.mean(dim=dim)
    if head_fusion == "max":
        return attn.amax(dim=dim)
    check_head_fusion(head_fusion)
    return attn.amin(dim=dim)


class ViTAttribution(Attribution):
    r"""Base class of the Vision-Transformer attribution methods.

    Captum's template: :meth:`attribute` validates the inputs and the target
    (:meth:`_prepare`), delegates to :meth:`_attribute` and formats its
    result. Subclasses implement only :meth:`_attribute` and say what it
    returns with the class attribute :attr:`_attribute_returns`:

    * ``"tokens"`` (most methods): one score per patch token ``(B, gh * gw)``
      (or ``(B, K, gh * gw)`` for ``K`` maps per image, e.g. one per head);
      ``output="input"`` upsamples it to the pixels;
    * ``"pixels"`` (pixel-native methods: LRP, AttnLRP, ViT-CX): one score
      per input element ``(B, C, H, W)``, or ``(B, 1, H, W)`` for a map
      shared by the channels; ``output="tokens"`` pools it per patch with
      :attr:`_token_reduce`.

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face ``transformers`` or
            torchvision Vision Transformer (``DataParallel``,
            ``DistributedDataParallel`` and ``torch.compile`` wrappers are
            unwrapped; modules compiled in place run eagerly), in float32,
            float64 or a half-precision dtype the method accepts
            (:attr:`_half_dtypes`), or a
            :class:`~captum_vit.adapters.ViTAdapter` wrapping one.
        interpolate_mode (str, optional): how token maps are upsampled to the
            input's pixels. Default: ``"bilinear"``
    """

    #: whether the method takes gradients (autograd through the model):
    #: such methods refuse to run under ``torch.inference_mode()``
    _needs_grad: bool = False
    #: what :meth:`_attribute` returns: ``"tokens"`` or ``"pixels"`` (above)
    _attribute_returns: str = "tokens"
    #: how ``output="tokens"`` pools a pixel-native map onto the patch grid:
    #: ``"sum"`` or ``"mean"`` over the channels and pixels of each patch
    _token_reduce: str = "sum"
    #: whether the method is defined on every token graph (windowed,
    #: hierarchical models such as Swin) or only on plain ViTs
    _any_graph: bool = False
    #: why a plain-only method does not apply to a windowed or hierarchical
    #: model (the end of the error message)
    _plain_only: str = (
        "it is defined on plain Vision Transformers, whose every layer attends "
        "over one set of tokens; this model attends within windows and merges "
        "tokens between stages"
    )
    #: whether the method drops tokens from the sequence mid-forward (EViT's
    #: pruning, TIS's sampling): models whose attention depends on token
    #: positions (relative position bias, RoPE) then refuse it
    _drops_tokens: bool = False
    #: whether the method runs perturbed copies of each image (ATMAN, ViT-CX,
    #: TIS, ViT-ReciproCAM) or extra rows (ViT Shapley's empty coalition) in
    #: its forward passes: its :meth:`_attribute` then takes the
    #: keyword ``internal_batch_size`` (copies per forward pass, None for the
    #: method's own default) besides the chunking of the batch into images
    _batches_copies: bool = False
    #: per-call diagnostics that :meth:`_attribute` sets on the instance
    #: (numbers, larger is worse; AttentionFlow's ``last_error_bound``): after
    #: a call explained in chunks (``internal_batch_size``) each holds its
    #: largest value over the chunks, the value of the whole call
    _call_maxima: Tuple[str, ...] = ()
    #: the half-precision dtypes whose models the method explains: those in
    #: which its maps stay within the documented tolerance of the float32
    #: maps (``docs/performance.rst``, Half precision)
    _half_dtypes: Tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
    #: why it refuses the other half-precision dtypes (the error's reason)
    _half_refusal: str = ""

    #: whether the method is defined on models with class-attention layers
    #: (CaiT: self-attention over the patches, then layers where only the
    #: class token queries; ``docs/token_graph.rst``, "CaiT: two phases").
    #: Such a model is neither plain nor windowed: this flag alone decides
    #: (:attr:`_any_graph` and :attr:`_plain_only` are about windowed,
    #: hierarchical models)
    _class_attention: bool = False
    #: why a method does not apply to such a model (the end of the error);
    #: every method that refuses CaiT says why its own definition does not
    #: carry over
    _no_class_attention: str = (
        "it is defined on one set of tokens that every layer attends over; in "
        "this model the class token joins only after the self-attention layers "
        "and is the only query of the class-attention layers, so no layer "
        "of the first phase has a class-token row and the later ones have no "
        "patch rows"
    )

    @classmethod
    def _refusal(cls, adapter: ViTAdapter) -> Optional[str]:
        """Why the method does not apply to the model ``adapter`` wraps
        (the end of the error message), or None when it applies."""
        if adapter.class_attention:
            return None if cls._class_attention else cls._no_class_attention
        if not (cls._any_graph or adapter.plain):
            return cls._plain_only
        return None

    def __init__(self, model: nn.Module, interpolate_mode: str = "bilinear") -> None:
        self.adapter: ViTAdapter = adapters.get(model)
        self.model = self.adapter.model
        reason = self._refusal(self.adapter)
        if reason is not None:
            raise adapters.UnsupportedModelError(
                f"{type(self).__name__} does not apply to "
                f"{type(self.model).__name__}: {reason}. "
                "captum_vit.attr.list_methods(model=model) lists the methods that "
                "do (those written over the token graph, docs/token_graph.rst)."
            )
        self.interpolate_mode = interpolate_mode
        super().__init__(self.adapter.forward)

    # ----------------------------------------------------------- Captum API
    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        output: str = "input",
        internal_batch_size: Optional[int] = None,
    ) -> Union[Tensor, Tuple[Tensor]]:
        r"""Explain ``target`` for every image of ``inputs``.

        Args:
            inputs (Tensor or tuple of one Tensor): images ``(B, C, H, W)`` in
                the model's input space (already normalised), in the model's
                dtype.
            target (int, tuple, Tensor or list, optional): the output index to
                explain per sample: an int for all samples, or one index per
                sample as a 1-D tensor or list. ``None`` explains the predicted
                class. Default: None
            additional_forward_args (Any, optional): extra positional
                arguments passed to the model after ``inputs``; a tensor whose
                first dimension is the batch is split with ``inputs`` when
                the batch is explained in chunks. Default: None
            output (str, optional): ``"input"`` for a map with the input's
                shape ``(B, C, H, W)``; ``"tokens"`` for the patch grid
                ``(B, gh, gw)``. Default: ``"input"``
            internal_batch_size (int, optional): the most images (or, for
                methods that run perturbed copies of each image: ATMAN,
                ViT-CX, TIS, ViT-ReciproCAM, the most copies) evaluated in
                one forward pass, as in Captum. A larger batch is explained
                in chunks of ``internal_batch_size`` images, one after the
                other, which bounds the memory; the maps are those of the
                whole batch (to float rounding: a sample's map never depends
                on its batch). ``None`` explains the batch at once (and runs
                copies in the method's own passes, see its constructor).
                Default: None

        For methods that score tokens, ``output="input"`` is the patch map
        upsampled to the pixels (bilinearly by default, as Chefer et al.'s
        evaluation does) and repeated over the channels. Pixel-native methods
        (:class:`~captum_vit.attr.LRP`, :class:`~captum_vit.attr.AttnLRP`:
        relevance per input element; :class:`~captum_vit.attr.ViTCX`: one
        saliency per pixel, repeated over the channels) return their map as
        is, and ``output="tokens"`` pools it within each patch (LRP: summed
        over channels and pixels; ViT-CX: averaged).

        Returns:
            Tensor: the attribution map (detached), ``(B, C, H, W)`` (a
            1-tuple if ``inputs`` was one) or ``(B, gh, gw)``, in the
            input's dtype (float32 for float16 and bfloat16 inputs: see
            ``docs/performance.rst``, Half precision).

        Examples::

            >>> import timm, torch, captum_vit as cv
            >>> model = timm.create_model("vit_tiny_patch16_224").eval()
            >>> images = torch.randn(2, 3, 224, 224)
            >>> attr = cv.AttentionRollout(model).attribute(images)
            >>> attr.shape
            torch.Size([2, 3, 224, 224])
            >>> cv.AttnLRP(model).attribute(images, output="tokens").shape
            torch.Size([2, 14, 14])
            >>> # at most one image per forward pass: the same maps
            >>> ga = cv.GenericAttention(model)
            >>> ga.attribute(images, internal_batch_size=1).shape
            torch.Size([2, 3, 224, 224])
        """
        inputs, is_tuple, target, args = self._prepare(
            inputs, target, additional_forward_args, output
        )
        size = check_internal_batch_size(internal_batch_size)
        # under torch.autocast, only the model's forward passes are autocast;
        # the method's products run in full precision (float32 accumulation)
        with adapters.autocast_model_only(inputs.device.type):
            scores = self._attribute_chunks(inputs, target, args, size)
        if self._attribute_returns == "pixels":
            out = self._format_pixels(scores, inputs, output)
        else:
            out = self._format_tokens(scores, inputs, output)
        return (out,) if is_tuple and output == "input" else out

    def _attribute_chunks(
        self,
        inputs: Tensor,
        target: Optional[Tensor],
        args: tuple,
        internal_batch_size: Optional[int],
    ) -> Tensor:
        """:meth:`_attribute` on chunks of at most ``internal_batch_size``
        images (all at once for None), concatenated along the batch; the
        diagnostics of :attr:`_call_maxima` are the largest of the chunks'."""
        B = int(inputs.shape[0])
        extra = (
            {"internal_batch_size": internal_batch_size} if self._batches_copies else {}
        )
        parts = []
        maxima: dict = {}
        slices = chunks(B, internal_batch_size)
        for rows in slices:
            part = self._attribute(
                inputs[rows],
                None if target is None else target[rows],
                args if len(slices) == 1 else select_rows(args, rows, B),
                **extra,
            )
            parts.append(part.detach())
            for name in self._call_maxima:
                value = getattr(self, name)
                maxima[name] = max(maxima.get(name, value), value)
        for name, value in maxima.items():
            setattr(self, name, value)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def _map_dtype(inputs: Tensor) -> torch.dtype:
        """The dtype of the maps: the input's, float32 for half inputs."""
        return torch.promote_types(inputs.dtype, torch.float32)

    def _format_tokens(self, scores: Tensor, inputs: Tensor, output: str) -> Tensor:
        """Token scores ``(B, [K,] gh * gw)`` as the grid or upsampled."""
        size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        gh, gw = self.adapter.grid_size(size)
        B = inputs.shape[0]
        grid = scores.to(self._map_dtype(inputs)).reshape(B, -1, gh, gw)
        K = grid.shape[1]
        if output == "tokens":
            return grid[:, 0] if scores.dim() == 2 else grid
        out = tokens_to_pixels(
            grid.reshape(B * K, gh, gw),
            size,
            self.adapter.patch_size,
            channels=inputs.shape[1] if scores.dim() == 2 else 1,
            mode=self.interpolate_mode,
        )
        return out if scores.dim() == 2 else out.reshape(B, K, *size)

    def _format_pixels(self, pixels: Tensor, inputs: Tensor, output: str) -> Tensor:
        """A pixel map ``(B, C or 1, H, W)`` as is or pooled per patch."""
        pixels = pixels.to(self._map_dtype(inputs))
        if output == "tokens":
            size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
            return pixels_to_tokens(
                pixels,
                self.adapter.grid_size(size),
                self.adapter.patch_size,
                self._token_reduce,
            )
        return pixels.expand_as(inputs).contiguous()

    def _prepare(
        self, inputs: Any, target: TargetType, additional_forward_args: Any, output: str
    ) -> Tuple[Tensor, bool, Optional[Tensor], tuple]:
        """Validate ``attribute``'s arguments, the same way for every method.

        Returns:
            ``(inputs, is_tuple, target, args)``: the image tensor, whether it
            came as a 1-tuple (the output is then a 1-tuple too), the target
            as a LongTensor ``(B,)`` or None, and the extra forward arguments
            as a tuple.
        """
        is_tuple = isinstance(inputs, tuple)
        if is_tuple:
            if len(inputs) != 1:
                raise ValueError(
                    "captum_vit methods take one image tensor; got a tuple of "
                    f"{len(inputs)} inputs"
                )
            inputs = inputs[0]
        check_choice("output", output, _OUTPUTS)
        self._check_inputs(inputs)
        inputs = self._check_mode(inputs)
        # channels_last (or any strided) images are explained as their
        # contiguous copy: the same maps as the contiguous images, bit for bit
        inputs = inputs.contiguous()
        target = self._check_target(target, inputs.shape[0])
        args = _format_additional_forward_args(additional_forward_args)
        args = () if args is None else tuple(args)
        return inputs, is_tuple, target, args

    # ---------------------------------------------------------- to implement
    def _attribute(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tensor:
        """Return patch-token scores ``(B, gh * gw)`` (or pixel scores, see
        :attr:`_attribute_returns`) for the validated ``inputs``, ``target``
        (LongTensor ``(B,)`` or None for the predicted class) and extra
        forward arguments ``args``. Methods with :attr:`_batches_copies` also
        take the keyword ``internal_batch_size`` (copies per forward pass;
        None for their own default)."""
        raise NotImplementedError

    # ------------------------------------------------------------- checking
    def _check_inputs(self, inputs: Any) -> None:
        if not isinstance(inputs, Tensor):
            raise TypeError(
                f"inputs must be a torch.Tensor, got {type(inputs).__name__}"
            )
        if inputs.dim() != 4:
            raise ValueError(
                f"inputs must be a batch of images (B, C, H, W); got shape "
                f"{tuple(inputs.shape)}"
            )
        if inputs.shape[0] == 0:
            raise ValueError("inputs is an empty batch")
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must be floating point, got {inputs.dtype}")
        if not torch.isfinite(inputs).all():
            raise ValueError("inputs contain NaN or Inf")
        self.adapter.check_image_size((int(inputs.shape[-2]), int(inputs.shape[-1])))
        dtype = self.adapter.dtype
        autocast = torch.is_autocast_enabled(inputs.device.type)
        if inputs.dtype != dtype and not autocast:
            raise TypeError(
                f"inputs are {inputs.dtype} but the model takes {dtype} (the dtype of "
                f"its patch embedding): cast the inputs (inputs.to({dtype})) or the "
                f"model (model.to({inputs.dtype})) so that both match"
            )
        self._check_half(dtype, autocast, inputs.device.type)

    def _check_half(self, dtype: torch.dtype, autocast: bool, device: str) -> None:
        """Refuse a half-precision model (or autocast region) whose dtype is
        not in :attr:`_half_dtypes`, saying what to pass instead."""
        half = dtype if dtype in _HALF else None
        if autocast and torch.get_autocast_dtype(device) in _HALF:
            half = torch.get_autocast_dtype(device)
        model_refusal = self.adapter.half_precision_refusal
        if half is None or (half in self._half_dtypes and model_refusal is None):
            return
        float16 = torch.float16 in self._half_dtypes and model_refusal is None
        instead = "a float32 copy" + (" (or a float16 one)" if float16 else "")
        reason = self._half_refusal if model_refusal is None else model_refusal
        raise TypeError(
            f"{type(self).__name__} does not explain {half} models or autocast "
            f"regions: {reason}. Explain {instead} instead: "
            "copy.deepcopy(model).float() with inputs.float(), outside "
            "torch.autocast"
        )

    def _check_mode(self, inputs: Tensor) -> Tensor:
        """Refuse gradients under inference mode, warn about active dropout;
        returns ``inputs`` (copied out of inference mode if need be)."""
        inference = torch.is_inference_mode_enabled()
        if inference and self._needs_grad:
            raise RuntimeError(
                f"{type(self).__name__} takes gradients, which torch.inference_mode() "
                "forbids: call attribute outside inference mode, or inside "
                "`with torch.inference_mode(False):`"
            )
        if inputs.is_inference() and not inference:
            inputs = inputs.clone()  # an inference tensor cannot enter autograd
        random = self.adapter.stochastic_modules()
        if random:
            more = ", ..." if len(random) > 3 else ""
            warnings.warn(
                f"the model is in training mode with active dropout "
                f"({', '.join(random[:3])}{more}): its outputs, and so the maps, "
                "change from call to call. Call model.eval() before explaining.",
                UserWarning,
                stacklevel=4,
            )
        return inputs

    def _check_target(self, target: TargetType, batch: int) -> Optional[Tensor]:
        """Normalise ``target`` to a LongTensor ``(B,)`` (or None = predicted)."""
        # a similarity model names its outputs (prompts, references)
        outputs = getattr(self.adapter, "kind", "classes")
        n = self.adapter.num_classes or None
        return format_target(target, batch, n, outputs=outputs)

    # -------------------------------------------------------------- helpers
    def _trace(
        self,
        inputs: Tensor,
        target: Optional[Tensor],
        args: tuple,
        tracer: Optional[Tracer] = None,
        grad: bool = False,
    ) -> Tuple[Tracer, Tensor, Tensor, Optional[List[Tensor]]]:
        """One traced forward (and, if ``grad``, the attention gradients).

        Returns:
            ``(tracer, logits, target, grads)``: ``target`` is the resolved
            target ``(B,)``; ``grads`` the gradients of the summed target
            logits with respect to each layer's attention probabilities (the
            sum keeps samples independent).
        """
        tracer = Tracer() if tracer is None else tracer
        with torch.set_grad_enabled(grad), self.adapter.trace(tracer):
            x = inputs.detach().requires_grad_(grad)
            logits = self.adapter.forward(x, *args)
        if target is None:
            target = logits.detach().argmax(dim=-1)
        target = target.to(logits.device)
        grads = None
        if grad:
            with torch.enable_grad():
                score = logits.gather(1, target[:, None]).sum()
                grads = list(torch.autograd.grad(score, tracer.attention_list()))
        return tracer, logits, target, grads

    def _attention_gradients(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple
    ) -> Tuple[Tracer, List[Tensor], TokenGraph]:
        """The prologue of the gradient-weighted attention methods: one
        traced forward and backward (:meth:`_trace` with ``grad=True``).

        Returns:
            ``(tracer, grads, graph)``: the tracer holding every layer's
            attention, the gradients of the summed target logits with
            respect to them, and the token graph (on an attention-pooled
            model, with the pooling row the tracer recorded).
        """
        tracer, _, _, grads = self._trace(inputs, target, args, grad=True)
        assert grads is not None  # grad=True
        return tracer, grads, self._graph(inputs, tracer)

    def _graph(self, inputs: Tensor, tracer: Optional[Tracer] = None) -> TokenGraph:
        """The model's token graph for the size of ``inputs``.

        On an attention-pooled model (:attr:`ViTAdapter.pooling`
        ``"attention"``) the graph's pooling row is the one ``tracer``
        recorded in the forward of ``inputs``
        (:meth:`~captum_vit.adapters.Tracer.pool_row`, one row per sample):
        the row :meth:`_patch_row` and :meth:`_pool_rows` read. Without a
        tracer that recorded one, such a graph has no pooling row yet
        (``pool`` None).
        """
        size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        graph = self.adapter.token_graph(size)
        return graph.with_pool(None if tracer is None else tracer.pool_row())

    def _patch_row(self, matrix: Tensor, tracer: Optional[Tracer] = None) -> Tensor:
        """Read the explained row of token maps ``(B, N, N)`` at patch columns.

        For class-token models this is the class-token row (row 0; the mean of
        the class and distillation rows for distilled DeiT); for average-pooled
        models, the mean over patch rows. Prefix columns are dropped.

        For attention-pooled models (CLIP's attentional pooler, SigLIP,
        timm ``global_pool="map"``) the row is the pooling attention that
        ``tracer`` recorded in the forward the maps come from
        (:meth:`~captum_vit.adapters.Tracer.pool_row`: heads and pooled probes
        averaged, one row per sample); ``matrix`` may then hold ``K`` maps per
        sample, ``(B * K, N, N)``, sample-major.
        """
        row = None if tracer is None else tracer.pool_row()
        if row is None:
            w = self.adapter.pool_weights(matrix.shape[-1], matrix.device, matrix.dtype)
            out = torch.einsum("n,bnm->bm", w, matrix)
        else:
            row = row.to(matrix).repeat_interleave(matrix.shape[0] // row.shape[0], 0)
            out = torch.einsum("bn,bnm->bm", row, matrix)
        return out[:, self.adapter.num_prefix_tokens :]

    def _pool_rows(self, tracer: Optional[Tracer], matrix: Tensor) -> Tensor:
        """The pooling row of every sample, ``(B, N)``, for token maps
        ``matrix`` ``(B, ..., N)``: the static :meth:`ViTAdapter.pool_weights`
        repeated, or the attention pooling's row recorded by ``tracer``."""
        row = None if tracer is None else tracer.pool_row()
        if row is not None:
            return row.to(matrix)
        w = self.adapter.pool_weights(matrix.shape[-1], matrix.device, matrix.dtype)
        return w.expand(matrix.shape[0], -1)

    def _pooling_tracer(self, inputs: Tensor, args: tuple) -> Optional[Tracer]:
        """For an attention-pooled model, a tracer holding the pooling row of
        ``inputs`` (one forward without gradients, fused attention in the
        blocks), for methods whose maps come from elsewhere (the LRP
        engine); None for the static poolings."""
        if self.adapter.pooling != "attention":
            return None
        tracer = Tracer(keep_attention=False, layers=())
        with torch.no_grad(), self.adapter.trace(tracer):
            self.adapter.forward(inputs, *args)
        return tracer

    @staticmethod
    def _grid_source(
        graph: TokenGraph, layer: int, output: bool = False
    ) -> Tuple[int, bool]:
        """Where a forward traced with ``keep_blocks`` records the token grid
        of block ``layer``'s input (or, with ``output``, its output):
        ``(block, output)``, the tokens being ``tracer.block_outputs[block]``
        if ``output`` else ``tracer.block_inputs[block]``.

        Usually the block itself. A layer with a subset of queries that are
        all prefix tokens (CaiT's class attention:
        :attr:`~captum_vit.adapters.LayerWindows.queries`) records only
        those; its grid tokens pass it unchanged, as they pass every such
        layer before it, so they are the output of the last layer before it
        whose every token is a query (CaiT: the last self-attention block's
        output, the patch tokens every class-attention layer reads), on that
        layer's stage, whose grid is the same.
        """
        lw = graph.layers[layer]
        if lw.queries is None:
            return layer, output
        npre = graph.stages[lw.stage].num_prefix_tokens
        if bool((lw.queries >= npre).any()):  # pragma: no cover - no such model
            raise NotImplementedError("a grid token queries in a subset layer")
        full = [j for j in range(layer) if graph.layers[j].queries is None]
        if not full:  # pragma: no cover - no such model
            raise NotImplementedError("no layer before it updates the grid tokens")
        stage = graph.layers[full[-1]].stage
        assert graph.stages[stage].grid == graph.stages[lw.stage].grid
        return full[-1], True

    @classmethod
    def _grid_tokens(
        cls, tracer: Tracer, graph: TokenGraph, layer: int, output: bool = False
    ) -> Tuple[Tensor, int]:
        """The tokens :meth:`_grid_source` names, from ``tracer``, and the
        stage they belong to: ``(tokens, stage)``, tokens ``(B, N_stage,
        D)`` with the stage's prefix tokens first."""
        block, out = cls._grid_source(graph, layer, output)
        blocks = tracer.block_outputs if out else tracer.block_inputs
        return blocks[block], graph.layers[block].stage

    def _layer_index(self, layer: Optional[int], default: int = -1) -> int:
        """``layer`` (negative: from the end; None: ``default``) as an index in
        ``0 .. L - 1``; ``ValueError`` when out of range."""
        L = self.adapter.num_layers
        layer = default if layer is None else layer
        if not -L <= layer < L:
            raise ValueError(f"layer {layer} out of range for a {L}-layer model")
        return layer % L


class GraphAttribution(ViTAttribution):
    """Base of the methods written over the token graph
    (:meth:`~captum_vit.adapters.ViTAdapter.token_graph`,
    ``docs/token_graph.rst``): attention read, rolled out or propagated
    through windows, shifts and patch merging, and through both phases of
    CaiT, so they are defined on every model an adapter knows (plain,
    windowed and hierarchical, class-attention)."""

    _any_graph = True
    _class_attention = True


class CopiesAttribution(ViTAttribution):
    """Base of the methods that run perturbed copies of each image through the
    model (ATMAN, TIS, ViT-CX, ViT-ReciproCAM): their map is made of the
    model's outputs on the copies.

    What they share: ``attribute``'s ``internal_batch_size`` counts copies per
    forward pass (:attr:`~ViTAttribution._batches_copies`), the constructor's
    ``internal_batch_size`` is the default, the copies of one image run
    through :func:`~captum_vit._batching.chunks` of that size, a progress bar
    over the copies (``show_progress``), and half precision is refused
    (:data:`OUTPUTS_IN_HALF`). Subclasses pass ``internal_batch_size`` and
    ``show_progress`` to this constructor and implement
    :meth:`_attribute_copies`.

    Args:
        model (torch.nn.Module): as for :class:`ViTAttribution`.
        internal_batch_size (int or None): copies per forward pass when
            ``attribute`` gets none; None stands for
            :attr:`_default_batch_size`.
        show_progress (bool): show a tqdm progress bar over the copies.
        interpolate_mode (str): as for :class:`ViTAttribution`.
    """

    _batches_copies = True
    _half_dtypes = ()
    _half_refusal = OUTPUTS_IN_HALF
    #: the constructor's default ``internal_batch_size`` (None: all the
    #: copies of an image in one pass)
    _default_batch_size: Optional[int] = None

    def __init__(
        self,
        model: nn.Module,
        internal_batch_size: Optional[int],
        show_progress: bool,
        interpolate_mode: str,
    ) -> None:
        super().__init__(model, interpolate_mode)
        self.internal_batch_size = check_internal_batch_size(
            internal_batch_size, self._default_batch_size
        )
        self.show_progress = show_progress

    def _attribute(
        self,
        inputs: Tensor,
        target: Optional[Tensor],
        args: tuple,
        internal_batch_size: Optional[int] = None,
    ) -> Tensor:
        bs = internal_batch_size or self.internal_batch_size
        return self._attribute_copies(inputs, target, args, bs)

    def _attribute_copies(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple, bs: Optional[int]
    ) -> Tensor:
        """:meth:`~ViTAttribution._attribute` with ``bs`` the most copies per
        forward pass (``attribute``'s ``internal_batch_size``, else the
        constructor's; None: all the copies of an image at once)."""
        raise NotImplementedError

    def _progress(self, total: int, desc: str) -> Any:
        """A tqdm bar over ``total`` copies (a silent one unless
        ``show_progress``); a context manager that closes it."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.show_progress)
