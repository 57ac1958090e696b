"""The adapter interface: what a method may ask of a Vision Transformer.

An adapter wraps one *stock* model (timm, Hugging Face ``transformers`` or
torchvision) and answers the questions every ViT explanation method asks:
how many prefix tokens, which patch grid, which blocks and heads. Inside
:meth:`ViTAdapter.trace` it replaces, **per instance and only for the duration
of the context**, the ``forward`` of every transformer block and attention
module by an explicit implementation that computes the same function but
routes the attention core and the two residual additions through a
:class:`Tracer`. A tracer records attention probabilities, values and block
inputs/outputs, and can add a bias or a mask to the pre-softmax scores; the
LRP engine subclasses it to attach relevance rules to the matmuls, the softmax
and the residual adds.

Nothing is changed on the model's classes; on exit every instance attribute
that was set is removed again (or restored, if the user had set one), also when
the body raised.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._graph import TokenGraph, plain_graph
from ._surgery import patching

if TYPE_CHECKING:
    from ._text import TextTower

__all__ = [
    "autocast_model_only",
    "Tracer",
    "HeadMix",
    "ViTAdapter",
    "BlockParts",
    "EmbeddingParts",
    "HeadParts",
    "UnsupportedModelError",
]


#: the autocast that :func:`autocast_model_only` moved to the model's forward
#: passes in this thread: ``(device_type, dtype)``, or None
_MODEL_AUTOCAST = threading.local()


@contextlib.contextmanager
def autocast_model_only(device_type: str) -> Iterator[None]:
    """Inside the context, an enclosing ``torch.autocast`` of ``device_type``
    applies only to the model's forward passes run by
    :meth:`ViTAdapter.forward` (and their backward passes); the code between
    them, the explanation's own products, runs in full precision.

    Nothing changes when autocast is off. The setting is per thread.

    Args:
        device_type (str): ``"cuda"``, ``"cpu"`` ...: the inputs' device type.
    """
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    before = getattr(_MODEL_AUTOCAST, "state", None)
    _MODEL_AUTOCAST.state = (device_type, torch.get_autocast_dtype(device_type))
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        _MODEL_AUTOCAST.state = before


class UnsupportedModelError(TypeError):
    """Raised when no adapter knows the model's family."""


ScoreHook = Callable[[int, Tensor], Tensor]
#: a linear map across the heads of ``(B, H, nq, N)`` scores or probabilities
HeadMix = Callable[[Tensor], Tensor]
#: the ``mask`` of :meth:`Tracer.attention`: None, a bool tensor (True = may
#: attend) or an additive float tensor, broadcasting to ``(B, H, nq, N)``
Mask = Optional[Tensor]


def _random_in_training(module: nn.Module) -> bool:
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    for name in ("drop_prob", "attention_dropout", "dropout"):
        p = module.__dict__.get(name)
        if isinstance(p, float) and p > 0:
            return True
    return False


def _talking_heads(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    mask: Optional[Tensor],
    dropout: Optional[Callable[[Tensor], Tensor]],
    heads: Tuple[HeadMix, HeadMix],
) -> Tensor:
    """Talking-heads attention without any hook (see :meth:`Tracer.attention`)."""
    scores = heads[0]((q * scale) @ k.transpose(-2, -1))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    if scores.dtype in (torch.float16, torch.bfloat16):
        attn = scores.float().softmax(dim=-1).to(scores.dtype)
    else:
        attn = scores.softmax(dim=-1)
    attn = heads[1](attn)
    if dropout is not None:
        attn = dropout(attn)
    return attn @ v


class Tracer:
    r"""Hooks that an adapter's explicit forward calls; records what methods need.

    The default implementation computes plain scaled-dot-product attention

    .. math::
        A = \mathrm{softmax}\!\left(s\,QK^\top + M\right), \qquad O = A V

    and plain residual sums. Set the ``keep_*`` flags to record tensors (they
    stay in the autograd graph, so gradients with respect to them can be taken
    with :func:`torch.autograd.grad`).

    Args:
        keep_attention (bool, optional): record post-softmax attention
            probabilities ``A`` of shape ``(B, heads, N, N)`` per layer.
            Default: True
        keep_values (bool, optional): record values ``V`` ``(B, heads, N, d)``.
            Default: False
        keep_scores (bool, optional): record pre-softmax scores (after the
            scale, mask and ``score_hook``). Default: False
        keep_blocks (bool, optional): record each block's input and output
            tokens ``(B, N, D)``. Default: False
        score_hook (callable, optional): ``score_hook(layer, scores) ->
            scores`` applied to the scaled pre-softmax scores of every layer;
            use it to add a bias or a ``-inf`` mask (ATMAN, ViT Shapley).
            Default: None
        layers (iterable of int, optional): the layers to record; the others
            run torch's fused attention (see :meth:`explicit`). Default: None
            (all layers)
    """

    #: whether :meth:`ViTAdapter.trace` also routes the embedding (the
    #: positional-embedding add) and the head (the pooling) through
    #: :meth:`embed_add`, :meth:`pool` and :meth:`merge_heads`. Off by default:
    #: only tracers that need those ends (the LRP engine) switch it on.
    trace_ends: bool = False

    #: the ``layer`` that :meth:`qk`, :meth:`softmax`, :meth:`av` and the
    #: ``score_hook`` receive inside an attention-pooling head
    #: (:meth:`pool_attention`), apart from the blocks ``0 .. L-1``
    POOL: int = -1

    def __init__(
        self,
        keep_attention: bool = True,
        keep_values: bool = False,
        keep_scores: bool = False,
        keep_blocks: bool = False,
        score_hook: Optional[ScoreHook] = None,
        layers: Optional[Iterable[int]] = None,
    ) -> None:
        self.layers = None if layers is None else frozenset(layers)
        self.keep_attention = keep_attention
        self.keep_values = keep_values
        self.keep_scores = keep_scores
        self.keep_blocks = keep_blocks
        self.score_hook = score_hook
        self.attentions: Dict[int, Tensor] = {}
        self.values: Dict[int, Tensor] = {}
        self.scores: Dict[int, Tensor] = {}
        self.block_inputs: Dict[int, Tensor] = {}
        self.block_outputs: Dict[int, Tensor] = {}
        #: the attention probabilities of the attention-pooling head
        #: ``(B, heads, queries, N)`` (in the graph), recorded by
        #: :meth:`pool_attention` on models with attention pooling, else None
        self.pool_attention_probs: Optional[Tensor] = None
        #: the probe queries whose outputs the pooled vector reads
        self.pool_queries: Tuple[int, ...] = (0,)
        self.pool_first_key = 0

    # ----------------------------------------------------------- attention core
    def qk(self, layer: int, q: Tensor, k: Tensor, scale: float) -> Tensor:
        """Scaled scores ``scale * q @ k^T`` of shape ``(B, H, N, N)``."""
        return (q * scale) @ k.transpose(-2, -1)

    def softmax(self, layer: int, scores: Tensor) -> Tensor:
        """Softmax over keys, computed in float32 at least (as HF does).

        Half-precision scores (float16, bfloat16) give float32
        probabilities: methods record, differentiate and multiply the
        probabilities the softmax computed (rollout products, gradient
        weightings, in float32), and :meth:`av` casts them to the values'
        dtype for the model's own product ``A V``.
        """
        if scores.dtype in (torch.float16, torch.bfloat16):
            return scores.float().softmax(dim=-1)
        return scores.softmax(dim=-1)

    def av(self, layer: int, attn: Tensor, v: Tensor) -> Tensor:
        """Attention output ``attn @ v`` of shape ``(B, H, N, d)``, in the
        values' dtype."""
        return attn.to(v.dtype) @ v

    def attention(
        self,
        layer: int,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        scale: float,
        mask: Optional[Tensor] = None,
        dropout: Optional[Callable[[Tensor], Tensor]] = None,
        talking_heads: Optional[Tuple[HeadMix, HeadMix]] = None,
    ) -> Tensor:
        r"""The whole attention core; adapters call this once per layer.

        ``dropout`` is None when attention dropout is inactive (eval mode or
        p = 0). A layer outside :attr:`layers` that nothing customises runs
        torch's fused ``scaled_dot_product_attention`` and records nothing.

        ``talking_heads`` (CaiT's self-attention, Shazeer et al. 2020): the
        two linear maps across heads ``(pre, post)``, applied to the scaled
        scores before the softmax and to the probabilities after it,
        :math:`A = P_w(\mathrm{softmax}(P_l(s\,QK^\top)))`. The attention
        that :meth:`probabilities` receives, that is recorded and that
        multiplies :math:`V` is the mixed :math:`A`; ``keep_scores`` records
        the scores after :math:`P_l`. Outside :attr:`layers` such a layer
        runs the same function without the hooks (torch has no fused kernel
        for it).

        A subclass changes the attention through the smaller hooks rather
        than by re-declaring this method: :meth:`attention_inputs` (the
        queries, keys and values entering it) and :meth:`fused_attention`
        (the whole core in one call when there is no dropout and no talking
        heads), besides :meth:`qk`, :meth:`softmax`, :meth:`av` and
        :meth:`probabilities`.
        """
        q, k, v = self.attention_inputs(layer, q, k, v)
        if dropout is None and talking_heads is None:
            out = self.fused_attention(layer, q, k, v, scale, mask)
            if out is not None:
                return out
        elif talking_heads is not None and not self.explicit(layer):
            return _talking_heads(q, k, v, scale, mask, dropout, talking_heads)
        scores = self.qk(layer, q, k, scale)
        if talking_heads is not None:
            scores = talking_heads[0](scores)
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask
        if self.score_hook is not None:
            scores = self.score_hook(layer, scores)
        if self.keep_scores:
            self.scores[layer] = scores
        attn = self.softmax(layer, scores)
        if talking_heads is not None:
            # the head mix runs in the model's dtype, as in the model; its
            # output is kept in the softmax's (float32 for half models)
            attn = talking_heads[1](attn.to(scores.dtype)).to(attn.dtype)
        attn = self.probabilities(layer, attn)
        if self.keep_values:
            self.values[layer] = v
        if dropout is not None:
            attn = dropout(attn)
        return self.av(layer, attn, v)

    def attention_inputs(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """The queries, keys and values ``(B, H, N, d)`` entering
        :meth:`attention`; a tracer may record them or return replaced
        tensors (AGCAM detaches them)."""
        return q, k, v

    def fused_attention(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Mask
    ) -> Optional[Tensor]:
        """The attention output in one call, for a layer without dropout and
        without talking heads, or None to run the explicit core (:meth:`qk`,
        :meth:`softmax`, :meth:`av`, recording, ``score_hook``).

        By default torch's fused ``scaled_dot_product_attention`` for a
        layer that is not :meth:`explicit`; a tracer may compute the same
        function its own way (a mask folded into the kernel's, a relevance
        rule) and fall back to this one.
        """
        if self.explicit(layer):
            return None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    def probabilities(self, layer: int, attn: Tensor) -> Tensor:
        """The attention that multiplies the values, ``(B, H, nq, N)``: the
        softmax's output (after the head mixing of talking heads), before
        dropout. Records it (``keep_attention``) and returns it; a tracer
        that reads each layer's attention as it is computed overrides this."""
        if self.keep_attention:
            self.attentions[layer] = attn
        return attn

    def explicit(self, layer: int) -> bool:
        """Whether ``layer`` runs the explicit attention (:meth:`qk`,
        :meth:`softmax`, :meth:`av`, recording, ``score_hook``) rather than
        torch's fused kernel, which records nothing.

        By default every layer is explicit unless :attr:`layers` names a
        subset and no ``score_hook`` is set. A subclass that changes
        :meth:`qk`, :meth:`softmax` or :meth:`av` and passes ``layers`` must
        return True for the layers whose attention it changes.
        """
        return (
            self.layers is None or layer in self.layers or self.score_hook is not None
        )

    # ------------------------------------------------------ attention pooling
    def pool_attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        scale: float,
        queries: Sequence[int] = (0,),
        dropout: Optional[Callable[[Tensor], Tensor]] = None,
        first_key: int = 0,
    ) -> Tensor:
        r"""The cross-attention of an attention-pooling head: learnt probe
        queries ``q`` ``(B, H, Q, d)`` over the tokens (keys and values ``k``,
        ``v`` ``(B, H, N, d)``), :math:`P = \mathrm{softmax}(s\,QK^\top)`,
        output :math:`PV` ``(B, H, Q, d)``.

        Adapters of attention-pooled models (timm ``global_pool="map"``,
        open_clip's attentional pooler, Hugging Face SigLIP's head) call it
        in every traced forward; it runs :meth:`qk`, the ``score_hook``,
        :meth:`softmax` and :meth:`av` with ``layer =`` :attr:`POOL` (so a
        mask or a relevance rule applies to the pooling too) and always
        records :attr:`pool_attention_probs`. ``queries`` names the probe
        rows the pooled vector reads (the first; or the mean of several);
        ``first_key`` the position in the sequence of the first key (timm
        pools the patch tokens only, after the prefix tokens).
        """
        scores = self.qk(self.POOL, q, k, scale)
        if self.score_hook is not None:
            # the hook sees scores over the whole sequence (zero before the
            # first key), as in the blocks
            padded = F.pad(scores, (first_key, 0))
            scores = self.score_hook(self.POOL, padded)[..., first_key:]
        attn = self.softmax(self.POOL, scores)
        self.pool_attention_probs = attn
        self.pool_queries = tuple(int(i) for i in queries)
        self.pool_first_key = int(first_key)
        if dropout is not None:
            attn = dropout(attn)
        return self.av(self.POOL, attn, v)

    def pool_row(self) -> Optional[Tensor]:
        r"""The pooling row of an attention-pooled model, ``(B, N)``.

        The pooling attention recorded by :meth:`pool_attention`, averaged
        over its heads and over the probe queries the pooled vector reads,

        .. math::
            w_n = \frac{1}{H\,|Q|} \sum_{h} \sum_{q \in Q} P_{h,q,n},

        detached, over the whole sequence (zero on tokens the pooling does
        not attend to); a row that sums to one, the data-dependent
        counterpart of :meth:`ViTAdapter.pool_weights` (one per sample). None
        when the model has no attention pooling (nothing was recorded).
        """
        probs = self.pool_attention_probs
        if probs is None:
            return None
        row = probs.detach()[:, :, list(self.pool_queries)].mean(dim=(1, 2))
        return F.pad(row, (self.pool_first_key, 0))

    # ----------------------------------------- fixed maps and gated products
    def rotary(self, layer: int, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """A fixed linear map of the queries or keys that depends on the
        token positions only, ``fn(x)`` (the rotary position embedding of
        EVA-02; ``fn`` is linear, without bias)."""
        return fn(x)

    def gate(self, layer: int, gate: Tensor, value: Tensor) -> Tensor:
        r"""The elementwise product of a gated MLP's two branches, ``gate *
        value`` (SwiGLU: :math:`\mathrm{SiLU}(x W_g) \odot x W_x`)."""
        return gate * value

    # ------------------------------------------------------------ block level
    def residual(self, layer: int, index: int, x: Tensor, branch: Tensor) -> Tensor:
        """Residual sum ``x + branch``; ``index`` 0 after attention, 1 after MLP."""
        return x + branch

    def block_input(self, layer: int, x: Tensor) -> Tensor:
        if self.keep_blocks:
            self.block_inputs[layer] = x
        return x

    def attention_input(self, layer: int, x: Tensor) -> Tensor:
        """The normalised tokens entering the attention module (the block's
        first norm applied to its input), ``(B, N, D)``; a tracer may return a
        replaced tensor (ViT-ReciproCAM masks them)."""
        return x

    def block_output(self, layer: int, x: Tensor) -> Tensor:
        if self.keep_blocks:
            self.block_outputs[layer] = x
        return x

    # --------------------------------------------- embedding and head (ends)
    def embed_add(self, tokens: Tensor, pos: Tensor) -> Tensor:
        """Positional-embedding sum ``tokens + pos`` (``pos`` broadcasts).

        Called only when :attr:`trace_ends` is set.
        """
        return tokens + pos

    def pool(self, x: Tensor, weights: Tensor) -> Tensor:
        """Pooled vector ``sum_n weights[n] * x[:, n]`` of shape ``(B, D)``.

        ``weights`` is :meth:`ViTAdapter.pool_weights`-like: one-hot for
        class-token pooling, uniform over patch tokens for average pooling.
        Called only when :attr:`trace_ends` is set.
        """
        return torch.einsum("n,bnd->bd", weights.to(x.dtype), x)

    def merge_heads(self, outputs: Sequence[Tensor]) -> Tensor:
        """Mean of several classifier outputs (timm's distilled DeiT)."""
        return functools.reduce(operator.add, outputs) / len(outputs)

    # --------------------------------------------------------------- helpers
    def attention_list(self) -> List[Tensor]:
        """Recorded attention probabilities ordered by layer."""
        return [self.attentions[i] for i in sorted(self.attentions)]


class BlockParts:
    """The modules of one pre-norm transformer block, named by role.

    ``qkv`` is a list: one fused linear (timm, torchvision) or three linears
    (Hugging Face). ``mlp`` lists the MLP's modules in call order. ``scales``
    lists elementwise per-channel scalings on the residual branches (timm's
    ``LayerScale``), empty where the model has none. ``attention_norms``
    lists normalisations inside the attention, applied to queries and keys
    (Swin v2's cosine attention), empty where there is none. ``post_norm`` is True
    for residual post-norm blocks (Swin v2: ``x + norm1(attn(x))``), where
    ``norm1``/``norm2`` follow the attention/MLP instead of preceding them.
    ``head_mixing`` lists the linear maps across heads of talking-heads
    attention (CaiT's ``proj_l`` before the softmax and ``proj_w`` after
    it), empty where there are none.
    """

    def __init__(
        self,
        block: nn.Module,
        attention: nn.Module,
        norm1: nn.Module,
        norm2: nn.Module,
        qkv: Sequence[nn.Module],
        proj: nn.Module,
        mlp: Sequence[nn.Module],
        scales: Sequence[nn.Module] = (),
        post_norm: bool = False,
        attention_norms: Sequence[nn.Module] = (),
        head_mixing: Sequence[nn.Module] = (),
    ) -> None:
        self.block = block
        self.attention = attention
        self.norm1 = norm1
        self.norm2 = norm2
        self.qkv = list(qkv)
        self.proj = proj
        self.mlp = list(mlp)
        self.scales = list(scales)
        self.post_norm = post_norm
        self.attention_norms = list(attention_norms)
        self.head_mixing = list(head_mixing)


class EmbeddingParts:
    """The modules of the patch embedding, named by role.

    ``patch`` is the patch-embedding convolution (``nn.Conv2d``); ``norm``
    the module applied to its tokens before the prefix tokens are joined
    (``None`` where there is none); ``post_norm`` the norm applied to every
    token after the positional sum, before the first block (CLIP's
    ``ln_pre`` / ``pre_layrnorm``; ``None`` where there is none). The
    positional-embedding sum itself is routed through
    :meth:`Tracer.embed_add`.
    """

    def __init__(
        self,
        patch: nn.Module,
        norm: Optional[nn.Module] = None,
        post_norm: Optional[nn.Module] = None,
    ) -> None:
        self.patch = patch
        self.norm = norm
        self.post_norm = post_norm


class HeadParts:
    """The modules between the last block and the logits, in call order.

    ``norm`` is the final norm over all tokens (``None`` if absent); the
    pooling is routed through :meth:`Tracer.pool`; ``fc_norm`` is a norm on
    the pooled vector (``None`` if absent); ``pre_logits`` lists modules
    between pooling and the classifier (torchvision's optional
    ``pre_logits`` linear and its ``tanh``); ``classifiers`` the final
    linear layer(s) (two for timm's distilled DeiT, merged by
    :meth:`Tracer.merge_heads`; the image projection of a CLIP tower).
    ``pooler`` lists the modules of an attention-pooling head (its
    query/key/value and output projections, its norms and MLP), whose
    attention core is routed through :meth:`Tracer.pool_attention`; empty
    for the static poolings.
    """

    def __init__(
        self,
        norm: Optional[nn.Module],
        classifiers: Sequence[nn.Module],
        fc_norm: Optional[nn.Module] = None,
        pre_logits: Sequence[nn.Module] = (),
        pooler: Sequence[nn.Module] = (),
    ) -> None:
        self.norm = norm
        self.classifiers = list(classifiers)
        self.fc_norm = fc_norm
        self.pre_logits = list(pre_logits)
        self.pooler = list(pooler)


class ViTAdapter:
    """Base class of the model-family adapters.

    Subclasses set :attr:`family`, implement :meth:`matches`, the static
    description (prefix tokens, patch size, grid) and the two explicit
    forwards :meth:`_block_forward` and :meth:`_attention_forward`.

    Args:
        model (torch.nn.Module): the stock model to explain.
    """

    family: str = "abstract"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # ------------------------------------------------------------- discovery
    @classmethod
    def matches(cls, model: nn.Module) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------ description
    @property
    def num_prefix_tokens(self) -> int:
        raise NotImplementedError

    @property
    def has_class_token(self) -> bool:
        raise NotImplementedError

    @property
    def pooling(self) -> str:
        """``"token"`` (class token feeds the head), ``"avg"`` (patch mean),
        ``"token+avg"`` (both, concatenated: Hugging Face DINOv2) or
        ``"attention"`` (learnt probe queries attend over the tokens: timm's
        ``global_pool="map"``, open_clip's attentional pooler, SigLIP; the
        pooling row is then the recorded :meth:`Tracer.pool_row`)."""
        raise NotImplementedError

    @property
    def patch_size(self) -> Tuple[int, int]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def blocks(self) -> List[nn.Module]:
        raise NotImplementedError

    def block_parts(self, layer: int) -> BlockParts:
        raise NotImplementedError

    def embedding_parts(self) -> EmbeddingParts:
        """The patch-embedding modules (see :class:`EmbeddingParts`)."""
        raise NotImplementedError

    def head_parts(self) -> HeadParts:
        """The final norm, pooled-vector norm and classifier(s)."""
        raise NotImplementedError

    def between_parts(self) -> List[nn.Module]:
        """Modules that run between blocks, in call order: the norm and the
        linear reduction of each patch merging of a hierarchical model (Swin);
        empty for a plain ViT."""
        return []

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    @property
    def half_precision_refusal(self) -> Optional[str]:
        """Why no method explains this model in float16 or bfloat16 (None:
        each method's own rule applies; ``docs/performance.rst``, Half
        precision)."""
        return None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model takes its images in: that of the patch
        embedding's weight."""
        weight = self.embedding_parts().patch.weight
        if not isinstance(weight, Tensor):
            raise TypeError("the patch embedding has no weight tensor")
        return weight.dtype

    def stochastic_modules(self) -> List[str]:
        """Names of the modules that are random in their current mode.

        A module counts when it is in training mode with a positive
        dropout probability: ``torch.nn`` dropout layers, timm's ``DropPath``
        (``drop_prob``), Hugging Face attention (``attention_dropout``) and
        ``nn.MultiheadAttention`` (``dropout``). An explanation of such a
        model changes from call to call.
        """
        names = []
        for name, module in self.model.named_modules():
            if module.training and _random_in_training(module):
                names.append(name)
        return names

    @property
    def num_heads(self) -> int:
        """Attention heads of the first layer (see :meth:`layer_heads`)."""
        raise NotImplementedError

    def layer_heads(self, layer: int) -> int:
        """Attention heads of ``layer`` (hierarchical models have more heads
        in later stages)."""
        return self.num_heads

    @property
    def plain(self) -> bool:
        """Whether every input size gives a plain :class:`TokenGraph`: one
        token set, one dense attention over all of it in every layer (ViT,
        DeiT). False for windowed or hierarchical models (Swin)."""
        return True

    @property
    def class_attention(self) -> bool:
        """Whether some layers attend from a subset of the tokens only, over
        a token set that changes between phases (CaiT: self-attention over
        the patches, then class-attention layers whose one query is the
        class token, joined after the self-attention phase). Methods defined
        on one token set through the whole depth do not apply
        (``docs/token_graph.rst``, "CaiT: two phases")."""
        return False

    def token_graph(self, image_size: Tuple[int, int]) -> TokenGraph:
        """The :class:`~captum_vit.adapters.TokenGraph` of the model for
        images of ``image_size``: the stages, each layer's windows, the merges
        and the pooling row that methods compose (``docs/token_graph.rst``).

        The default is the plain graph: one stage of the prefix tokens and
        the patch grid, dense attention in every layer, the pooling row
        :meth:`pool_weights` (None for attention pooling, whose row a traced
        forward records: :meth:`Tracer.pool_row`,
        :meth:`TokenGraph.with_pool`).
        """
        gh, gw = self.grid_size((int(image_size[0]), int(image_size[1])))
        grid = (int(gh), int(gw))
        npre = self.num_prefix_tokens
        N = npre + grid[0] * grid[1]
        pool = None if self.pooling == "attention" else self.pool_weights(N)
        return plain_graph(grid, npre, self.num_layers, pool)

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid ``(gh, gw)`` for an input of spatial size ``image_size``
        (for hierarchical models, the first stage's grid: that of the patch
        embedding). By default that of a patch embedding without padding,
        ``(H // ph, W // pw)``."""
        ph, pw = self.patch_size
        return image_size[0] // ph, image_size[1] // pw

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        """Raise ``ValueError`` if the model cannot take this image size."""
        raise NotImplementedError

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """Run the model and return the logits tensor ``(B, classes)``.

        Modules compiled in place (``module.compile()``) run eagerly here, as
        a model wrapped by ``torch.compile`` is unwrapped (:func:`unwrap`):
        explanations trace, hook and differentiate the eager modules (see
        :meth:`eager`). Inside :func:`autocast_model_only` the forward runs
        under the autocast that context set aside.

        Raises:
            ValueError: the model's output is not a ``(B, classes)`` tensor.
        """
        state = getattr(_MODEL_AUTOCAST, "state", None)
        autocast = (
            contextlib.nullcontext()
            if state is None
            else torch.autocast(state[0], dtype=state[1])
        )
        with self.eager(), autocast:
            logits = self._call_model(inputs, *args, **kwargs)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
            raise ValueError(
                f"the model returned output of shape {shape}; "
                "expected logits (B, classes)"
            )
        return logits

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Run the modules of the model that were compiled in place
        (``module.compile()``, which sets ``module._compiled_call_impl``)
        eagerly in this thread for the duration of the context.

        Calls from other threads keep the compiled code (the change is a
        routed instance attribute of :func:`~captum_vit.adapters.patching`,
        removed on exit). Nothing is changed for a model without such
        modules.
        """
        compiled = [
            m
            for m in self.model.modules()
            if m.__dict__.get("_compiled_call_impl") is not None
        ]
        if not compiled:
            yield
            return
        with patching(self.model) as patch:
            for m in compiled:
                patch.set(m, "_compiled_call_impl", m._call_impl)
            yield

    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Any:
        """The model's own call; families whose output is not a tensor unwrap it."""
        return self.model(inputs, *args, **kwargs)

    def pool_weights(
        self,
        num_tokens: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        """Row vector ``w`` (N,) that reads the explained token out of a map.

        For class-token pooling it is the one-hot of the class token (with
        several classifiers, each reading its own token, the mean of their
        one-hots: 1/2 on distilled DeiT's class and distillation tokens); for
        average pooling it is uniform over the patch tokens; for
        ``"token+avg"`` (Hugging Face DINOv2) the mean of the two, the head's
        two halves equally weighted. Methods that take "the class-token row"
        of a token-to-token matrix compute ``w @ M``.

        Raises:
            NotImplementedError: the model pools by attention
                (:attr:`pooling` ``"attention"``): its row depends on the
                input and is read from a traced forward
                (:meth:`Tracer.pool_row`).
        """
        if self.pooling == "attention":
            raise NotImplementedError(
                f"{type(self.model).__name__} pools its tokens by attention: the "
                "pooling row depends on the image (Tracer.pool_row of a traced "
                "forward), there is no static one"
            )
        rows = self._pool_rows(torch.zeros(num_tokens, device=device, dtype=dtype))
        if len(rows) == 1:
            return rows[0]
        return functools.reduce(operator.add, rows) / len(rows)

    def _pool_rows(self, zeros: Tensor) -> List[Tensor]:
        """The rows of the vectors the model's head pools, in its order, each
        like ``zeros`` (``(N,)``, its device and dtype): for class-token
        pooling the one-hot of token ``i`` for classifier ``i`` of
        :meth:`head_parts` (one, or the class and distillation tokens of
        distilled DeiT); for average pooling the mean of the patch tokens
        (zero on every prefix token); for ``"token+avg"`` the class token,
        then the patch mean."""
        N, npre = zeros.shape[0], self.num_prefix_tokens
        rows = []
        if self.pooling in ("token", "token+avg"):
            heads = len(self.head_parts().classifiers) if self.pooling == "token" else 1
            for i in range(heads):
                rows.append(zeros.clone())
                rows[-1][i] = 1.0
        if self.pooling in ("avg", "token+avg"):
            rows.append(zeros.clone())
            rows[-1][npre:] = 1.0 / (N - npre)
        return rows

    def text_tower(self) -> Optional[TextTower]:
        """The model's text tower (prompts to embeddings, logit scale and
        bias), or None for a model without one (a classifier, a bare image
        tower)."""
        return None

    # ----------------------------------------------------------------- head
    def head_forward(
        self,
        tokens: Tensor,
        pool_weights: Optional[Tensor] = None,
        final_norm: bool = True,
        tracer: Optional[Tracer] = None,
    ) -> Tensor:
        r"""The model's output (what :meth:`forward` returns) computed from
        ``tokens`` ``(B, N, D)`` taken as the output of the last block: the
        final norm, the pooling, the pooled-vector norm, the pre-logits and
        the classifier(s) of :meth:`head_parts`. On the model's own
        last-block output it is the model's output. LeGrad reads every
        layer's tokens through it.

        Args:
            tokens (Tensor): ``(B, N, D)`` tokens, all ``N`` of the sequence.
            pool_weights (Tensor, optional): ``(N,)`` weights that pool the
                tokens in place of the model's pooling (an attention pooling
                is skipped). The tokens are pooled *first* and the final norm
                applied to the pooled vector (the same for a one-hot
                ``pool_weights``); every classifier reads that vector.
                Default: None (the model's pooling)
            final_norm (bool, optional): apply the model's final norm (on the
                tokens, or on the pooled vector). Default: True
            tracer (Tracer, optional): receives the pooling
                (:meth:`Tracer.pool`, :meth:`Tracer.pool_attention`).
                Default: a plain :class:`Tracer`

        Returns:
            Tensor: ``(B, outputs)``.
        """
        tracer = Tracer(keep_attention=False) if tracer is None else tracer
        parts = self.head_parts()
        norm = parts.norm if final_norm else None
        if pool_weights is None:
            tokens = tokens if norm is None else norm(tokens)
            pooled = self._pool_tokens(tokens, tracer)
        else:
            p = tracer.pool(tokens, pool_weights.to(tokens))
            pooled = self._split_pooled(p if norm is None else norm(p))
        outs = []
        for p, classifier in zip(pooled, parts.classifiers):
            if final_norm and parts.fc_norm is not None:
                p = parts.fc_norm(p)
            for module in parts.pre_logits:
                p = module(p)
            outs.append(classifier(p))
        return outs[0] if len(outs) == 1 else tracer.merge_heads(outs)

    def _pool_tokens(self, tokens: Tensor, tracer: Tracer) -> List[Tensor]:
        """The model's pooling for :meth:`head_forward`: one pooled vector
        per classifier of :meth:`head_parts` (token ``i`` for classifier
        ``i`` of several, as distilled DeiT; else :meth:`pool_weights`)."""
        N = tokens.shape[1]
        if len(self.head_parts().classifiers) > 1:
            return [
                tracer.pool(tokens, w) for w in self._pool_rows(tokens.new_zeros(N))
            ]
        w = self.pool_weights(N, tokens.device, tokens.dtype)
        return [tracer.pool(tokens, w)]

    def _split_pooled(self, pooled: Tensor) -> List[Tensor]:
        """What each classifier reads when :meth:`head_forward` is given
        ``pool_weights``: the pooled vector."""
        return [pooled] * len(self.head_parts().classifiers)

    # ------------------------------------------------------------------ tracing
    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        raise NotImplementedError

    def _attention_forward(
        self, layer: int, attn: nn.Module, tracer: Tracer
    ) -> Callable[..., object]:
        raise NotImplementedError

    def relevance_gaps(self) -> List[str]:
        """Operations of the model that the LRP rules cannot carry relevance
        through, one phrase each (empty for the plain ViT families).

        The LRP engine turns the backward pass into a relevance pass by
        giving a rule to every operation it sees (the modules of
        :meth:`block_parts` and the :class:`Tracer` hooks); any other
        operation on the path that is neither (a product of two branches
        computed inside a module, a map the explicit forward does not route)
        would pass its plain gradient instead of relevance.
        :meth:`trace` refuses a relevance tracer on a model with gaps.
        """
        return []

    def _pooling_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        """``(object, attribute, function)`` overrides that route an
        attention-pooling head through :meth:`Tracer.pool_attention`; set by
        every :meth:`trace` (empty for the static poolings)."""
        return []

    def _mlp_forwards(
        self, tracer: Tracer
    ) -> List[Tuple[object, str, Callable[..., Any]]]:
        """``(object, attribute, function)`` overrides that route the gated
        product of gated (SwiGLU) MLPs through :meth:`Tracer.gate`; set by
        every :meth:`trace` (empty for the plain MLPs)."""
        return []

    def _end_forwards(self, tracer: Tracer) -> List[Tuple[object, str, Callable]]:
        """``(object, attribute, function)`` overrides that route the
        positional-embedding sum and the pooling through ``tracer``.

        Used by :meth:`trace` only when ``tracer.trace_ends`` is set; each
        override computes the same function as the code it replaces.
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def trace(self, tracer: Optional[Tracer] = None) -> Iterator[Tracer]:
        """Route every block and attention module through ``tracer``.

        Instance-level ``forward`` attributes are set on each block and
        attention module (and, if ``tracer.trace_ends``, on the embedding and
        head code) and removed again on exit (restored if the user had set
        one), also when an exception is raised inside the context.

        The model's lock (:func:`~captum_vit.adapters.model_lock`) is held for
        the whole context: tracing contexts on one model in different threads
        run one after the other, and calls from other threads bypass the
        tracer and run the stock model (see :func:`~captum_vit.adapters.
        patching`).

        Args:
            tracer (Tracer, optional): the tracer to use. Default: a
                :class:`Tracer` that records attention probabilities.

        Yields:
            the tracer, filled while the model runs inside the context.

        Raises:
            NotImplementedError: ``tracer`` propagates LRP relevance (it has
                a rule set, ``tracer.rules``) and the model has operations
                without a rule (:meth:`relevance_gaps`); nothing is changed.
        """
        tracer = Tracer() if tracer is None else tracer
        # the LRP engine's tracer carries its rule set as ``rules``
        if getattr(tracer, "rules", None) is not None and self.relevance_gaps():
            raise NotImplementedError(
                f"LRP relevance cannot be propagated through this "
                f"{type(self.model).__name__}: the LRP rules have no rule for "
                f"{'; '.join(self.relevance_gaps())}. The attention and gradient "
                "methods (rollout, GenericAttention, Grad-SAM, ATMAN, ...) work on it."
            )
        with patching(self.model) as patch:
            if getattr(tracer, "trace_ends", False):
                for obj, name, fn in self._end_forwards(tracer):
                    patch.set(obj, name, fn)
            for obj, name, fn in self._pooling_forwards(tracer):
                patch.set(obj, name, fn)
            for obj, name, fn in self._mlp_forwards(tracer):
                patch.set(obj, name, fn)
            for layer, block in enumerate(self.blocks()):
                attention = self.block_parts(layer).attention
                patch.set(block, "forward", self._block_forward(layer, block, tracer))
                patch.set(
                    attention,
                    "forward",
                    self._attention_forward(layer, attention, tracer),
                )
            yield tracer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"
