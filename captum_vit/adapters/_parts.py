"""Pieces shared by the adapters of several families.

Some operations of these models are not modules: timm's BEiT/EVA keep the
``q``/``v`` biases of the fused ``qkv`` projection apart from the linear layer
(``F.linear(x, qkv.weight, cat(q_bias, k_bias, v_bias))``) and multiply the
residual branches by bare layer-scale parameters (``gamma_1 * h``). The LRP
engine gives its rules to *modules* (those :meth:`ViTAdapter.block_parts`
lists), so the adapters make these operations small modules of their own,
:class:`FusedQKV` and :class:`Scale`, which compute exactly what the model
computes and which their explicit forwards call. They belong to the adapter,
not to the model (the model is never changed), and hold no parameter of
their own. The explicit self-attention of the ``transformers`` families
(:func:`hf_attention_forward`) lives here too, and what every family's
explicit forward shares: the routed transformer block
(:func:`routed_block`), the parts of a block (:func:`block_parts`, its MLP
read by :func:`mlp_parts`) and the size check of a model that takes one
image size (:func:`check_fixed_size`).
"""

from __future__ import annotations

import importlib
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Container,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._maps import _pair
from ._base import BlockParts, Tracer

if TYPE_CHECKING:
    from timm.layers import Attention
    from timm.models.beit import Attention as BeitAttention
    from timm.models.beit import Beit
    from timm.models.beit import Block as BeitBlock
    from timm.models.eva import Eva, EvaAttention, EvaBlock
    from timm.models.vision_transformer import Block, VisionTransformer
    from transformers.models.beit.modeling_beit import BeitEmbeddings
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings
    from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (  # noqa: E501
        Dinov2WithRegistersEmbeddings,
    )

    TimmBlock = Union[Block, BeitBlock, EvaBlock]
    TimmAttention = Union[Attention, BeitAttention, EvaAttention]

#: one step of a forward: a module, or a function of one tensor
Step = Callable[[Tensor], Tensor]

__all__ = [
    "FusedQKV",
    "OwnedView",
    "Scale",
    "scale_views",
    "Step",
    "chain",
    "routed_block",
    "mlp_parts",
    "block_parts",
    "check_positions",
    "present",
    "timm_blocks",
    "timm_attention",
    "timm_gaps",
    "GATE_GAP",
    "gated_mlp_forwards",
    "gate_gaps",
    "attention_norms",
    "pre_norm",
    "check_divisible",
    "check_fixed_size",
    "pair",
    "is_timm",
    "is_transformers",
    "hf_projections",
    "hf_embeddings_forward",
    "hf_attention_forward",
    "hf_classifier_forward",
]


class FusedQKV(nn.Module):
    r"""The fused ``qkv`` projection of timm's BEiT/EVA attention with its
    separate biases, :math:`y = x W^\top + [b_q, 0, b_v]`, as one linear
    layer (``weight``, ``bias`` are read from the attention module on every
    call).

    Args:
        attention (torch.nn.Module): a timm ``beit.Attention`` or
            ``eva.EvaAttention`` with a fused ``qkv`` linear.
    """

    _attention: Union[BeitAttention, EvaAttention]

    def __init__(self, attention: Union[BeitAttention, EvaAttention]) -> None:
        super().__init__()
        # a plain attribute (not a submodule): the view owns nothing
        object.__setattr__(self, "_attention", attention)

    @property
    def weight(self) -> Tensor:
        return self._attention.qkv.weight

    @property
    def bias(self) -> Optional[Tensor]:
        a = self._attention
        if a.q_bias is None:
            return a.qkv.bias
        # timm registers k_bias as a buffer, which its inferred type misses
        return torch.cat((a.q_bias, cast(Tensor, a.k_bias), a.v_bias))

    def forward(self, x: Tensor) -> Tensor:
        a = self._attention
        if a.q_bias is not None and getattr(a, "qkv_bias_separate", False):
            return a.qkv(x) + self.bias  # timm: qkv = self.qkv(x); qkv += bias
        return F.linear(x, self.weight, self.bias)


class OwnedView(nn.Module):
    """A module made of a bare tensor that another module holds (read from
    ``owner`` on every call, so the view follows the model's parameter and
    owns nothing: ``owner`` is a plain attribute, not a submodule).

    Args:
        owner (torch.nn.Module): the module that holds the tensor.
        name (str): the tensor's attribute name on ``owner``.
    """

    _owner: nn.Module

    def __init__(self, owner: nn.Module, name: str) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", owner)
        self._name = name

    @property
    def _tensor(self) -> Tensor:
        return cast(Tensor, getattr(self._owner, self._name))

    def extra_repr(self) -> str:
        return self._name


class Scale(OwnedView):
    """Multiplication of a residual branch by a bare layer-scale parameter
    (``gamma * x``, timm's BEiT/EVA ``gamma_1``/``gamma_2``, Hugging Face
    BEiT's ``lambda_1``/``lambda_2``), the same as timm's ``LayerScale``.

    Args:
        owner (torch.nn.Module): the block that holds the parameter.
        name (str): the parameter's attribute name on ``owner``.
    """

    @property
    def gamma(self) -> Tensor:
        return self._tensor

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * x


def scale_views(
    blocks: Sequence[nn.Module], names: Sequence[str]
) -> List[List[Optional[Scale]]]:
    """Per block, a :class:`Scale` for each layer-scale parameter ``names``
    (None where the block has none: ``None`` in timm, the float ``1.0`` in
    Hugging Face BEiT). Made once, when the adapter is made, so that every
    thread and the LRP rules see the same objects."""
    return [
        [
            Scale(b, n) if isinstance(getattr(b, n, None), Tensor) else None
            for n in names
        ]
        for b in blocks
    ]


def chain(*steps: Optional[Step]) -> Step:
    """The steps applied in order, ``chain(f, g)(x) = g(f(x))``, skipping
    those that are None (a layer scale a block does not have)."""

    def run(x: Tensor) -> Tensor:
        for step in steps:
            if step is not None:
                x = step(x)
        return x

    return run


def routed_block(
    layer: int,
    tracer: Tracer,
    x: Tensor,
    attend: Step,
    mlp: Step,
    norms: Tuple[Step, Step],
    branches: Sequence[Step] = (),
    post_norm: bool = False,
) -> Tensor:
    r"""One transformer block, the explicit forward of every family, with
    its input and output tokens (:meth:`Tracer.block_input`,
    :meth:`Tracer.block_output`), the attention's input
    (:meth:`Tracer.attention_input`) and the two residual sums
    (:meth:`Tracer.residual`) routed through ``tracer``. Pre-norm,

    .. math::
        x' = x + b_1\big(\mathrm{attend}(n_1(x))\big), \qquad
        y = x' + b_2\big(\mathrm{mlp}(n_2(x'))\big),

    or with ``post_norm`` (Swin v2) the norms after the branches,
    :math:`x + b_1(n_1(\mathrm{attend}(x)))` and
    :math:`x' + b_2(n_2(\mathrm{mlp}(x')))`; the attention's input is then
    ``x``. ``branches`` :math:`(b_1, b_2)` are what the family applies to a
    branch before its sum (dropout, layer scale, drop path: :func:`chain`;
    default: nothing).
    """
    norm1, norm2 = norms
    b1, b2 = branches or (chain(), chain())
    x = tracer.block_input(layer, x)
    if post_norm:
        h = norm1(attend(tracer.attention_input(layer, x)))
    else:
        h = attend(tracer.attention_input(layer, norm1(x)))
    x = tracer.residual(layer, 0, x, b1(h))
    h = norm2(mlp(x)) if post_norm else mlp(norm2(x))
    x = tracer.residual(layer, 1, x, b2(h))
    return tracer.block_output(layer, x)


#: the relevance gap of a gated MLP whose product :func:`gated_mlp_forwards`
#: cannot route (a layout other than timm's and Hugging Face's SwiGLU)
GATE_GAP = (
    "the gated product of the MLP (act(x W_g) * (x W_x), an elementwise "
    "product of two linear branches computed inside an MLP module that "
    "captum_vit does not know how to route)"
)


def mlp_parts(mlp: nn.Module) -> Tuple[List[nn.Module], bool]:
    """``(modules in call order, gated)`` of a block's MLP.

    Plain MLPs (timm ``Mlp``; Hugging Face ``BeitMLP``, ``Dinov2MLP``,
    ``ViTMLP``, ``CLIPMLP``) give ``fc1, act, [norm,] fc2``; open_clip's
    ``c_fc, gelu, c_proj``; an ``nn.Sequential`` of other names
    (torchvision's ``MLP``) its modules but the dropouts. The SwiGLU variants
    (timm ``SwiGLU`` and ``GluMlp``, Hugging Face ``Dinov2SwiGLUFFN``) give
    their two input linears (or the packed one), activation, norm and output
    linear, with ``gated`` set: their elementwise product of two branches is routed
    through :meth:`Tracer.gate` by :func:`gated_mlp_forwards`.

    Raises:
        TypeError: an MLP of another layout.
    """
    names = [
        ("fc1_g", "fc1_x", "act", "norm", "fc2"),  # timm SwiGLU
        ("gate_proj", "up_proj", "act_fn", "down_proj"),  # HF Dinov2SwiGLUFFN
        ("fc1", "act", "norm", "fc2"),  # timm Mlp / GluMlp
        ("fc1", "activation_fn", "fc2"),  # HF BeitMLP / Dinov2MLP / CLIPMLP
        ("c_fc", "gelu", "c_proj"),  # open_clip
    ]
    for layout in names:
        if all(hasattr(mlp, n) for n in layout if n != "norm"):
            parts = [getattr(mlp, n, None) for n in layout]
            gated = layout[0] in ("fc1_g", "gate_proj") or hasattr(mlp, "chunk_dim")
            return [p for p in parts if isinstance(p, nn.Module)], gated
    if isinstance(mlp, nn.Sequential):  # torchvision
        return [m for m in mlp if not isinstance(m, nn.Dropout)], False
    raise TypeError(f"unknown MLP layout {type(mlp).__name__}")


def block_parts(
    block: nn.Module,
    attention: nn.Module,
    qkv: Sequence[nn.Module],
    proj: nn.Module,
    norms: Tuple[str, str] = ("norm1", "norm2"),
    **roles: Any,
) -> BlockParts:
    """The :class:`BlockParts` of ``block``, whose norms are its attributes
    named ``norms`` and whose MLP is ``block.mlp`` (its modules by
    :func:`mlp_parts`); ``roles`` are the other keyword arguments of
    :class:`BlockParts` (``scales``, ``post_norm``, ...)."""
    norm1, norm2 = (getattr(block, n) for n in norms)
    mlp = mlp_parts(cast(nn.Module, block.mlp))[0]
    return BlockParts(block, attention, norm1, norm2, qkv, proj, mlp, **roles)


#: (module prefix, class name) of the gated MLPs whose forward
#: :func:`gated_mlp_forwards` reproduces
_GATED = {
    ("timm.", "SwiGLU"),
    ("timm.", "GluMlp"),
    ("transformers.", "Dinov2SwiGLUFFN"),
    ("transformers.", "Dinov2WithRegistersSwiGLUFFN"),
}


def _known_gate(mlp: nn.Module) -> bool:
    cls = type(mlp)
    return any(cls.__module__.startswith(m) and cls.__name__ == n for m, n in _GATED)


def _gated_forward(mlp: Any, layer: int, tracer: Tracer) -> Callable[..., Tensor]:
    """The forward of a known gated MLP (:data:`_GATED`) with its product
    routed: timm's ``SwiGLU`` (``act(fc1_g(x)) * fc1_x(x)``, then
    ``drop1, norm, fc2, drop2``), timm's ``GluMlp`` (``fc1(x)`` split in two
    halves, the activation on the second with ``gate_last``, else on the
    first) and Hugging Face's ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``."""

    def branches(x: Tensor) -> Tuple[Tensor, Tensor]:
        if hasattr(mlp, "fc1_g"):  # timm SwiGLU
            return mlp.act(mlp.fc1_g(x)), mlp.fc1_x(x)
        a, b = mlp.fc1(x).chunk(2, dim=mlp.chunk_dim)  # timm GluMlp
        return (mlp.act(b), a) if mlp.gate_last else (mlp.act(a), b)

    def forward(x: Tensor) -> Tensor:
        if hasattr(mlp, "gate_proj"):  # Hugging Face
            h = tracer.gate(layer, mlp.act_fn(mlp.gate_proj(x)), mlp.up_proj(x))
            return mlp.down_proj(h)
        h = mlp.drop1(tracer.gate(layer, *branches(x)))
        return mlp.drop2(mlp.fc2(mlp.norm(h)))

    return forward


def gated_mlp_forwards(
    blocks: Sequence[nn.Module], tracer: Tracer
) -> List[Tuple[object, str, Callable[..., Any]]]:
    """``(mlp, "forward", function)`` for every block whose ``mlp`` is a known
    gated MLP: the model's own forward with the product of its two branches
    routed through :meth:`Tracer.gate` (the other MLPs keep theirs)."""
    out: List[Tuple[object, str, Callable[..., Any]]] = []
    for layer, blk in enumerate(blocks):
        mlp = getattr(blk, "mlp", None)
        if isinstance(mlp, nn.Module) and _known_gate(mlp):
            out.append((mlp, "forward", _gated_forward(mlp, layer, tracer)))
    return out


def gate_gaps(blocks: Sequence[Any]) -> List[str]:
    """``[GATE_GAP]`` where a block's ``mlp`` is gated (:func:`mlp_parts`) but
    not one whose product :func:`gated_mlp_forwards` routes, else ``[]``."""
    if any(mlp_parts(b.mlp)[1] and not _known_gate(b.mlp) for b in blocks):
        return [GATE_GAP]
    return []


def hf_projections(attention: Any) -> List[nn.Module]:
    """The separate query, key and value projections (``q_proj``,
    ``k_proj``, ``v_proj``) of a ``transformers`` self-attention, for
    :attr:`BlockParts.qkv`."""
    return [attention.q_proj, attention.k_proj, attention.v_proj]


def check_positions(expected: int, got: int, what: str) -> None:
    """Raise ``NotImplementedError`` when a position-dependent term made for
    ``expected`` tokens meets a sequence of ``got`` tokens (a method that
    drops tokens mid-forward, such as EViT's pruning or TIS's sampling)."""
    if expected != got:
        raise NotImplementedError(
            f"the {what} is defined for the model's {expected} tokens but the "
            f"attention sees {got}: a method that drops tokens (EViT, TIS) would have "
            "to say which positions it kept, which it does not yet"
        )


def present(module: Optional[nn.Module]) -> bool:
    """Whether ``module`` is a module that computes something: not None
    (an absent optional module), not ``nn.Identity`` (one switched off)."""
    return isinstance(module, nn.Module) and not isinstance(module, nn.Identity)


def timm_blocks(model: Union[VisionTransformer, Beit, Eva]) -> List[TimmBlock]:
    """The blocks of a timm ViT, BEiT or EVA, typed (``nn.Sequential`` and
    ``nn.ModuleList`` type their items as ``Module``; each adapter checks the
    blocks' classes when it is made)."""
    return cast("List[TimmBlock]", list(model.blocks))


def timm_attention(module: nn.Module) -> TimmAttention:
    """``module`` (a block's ``attn``) as the attention of a timm ViT, BEiT
    or EVA (timm types ``Block.attn`` as ``Module``, made by a factory; each
    adapter checks its class when it is made)."""
    return cast("TimmAttention", module)


def attention_norms(attention: nn.Module) -> List[nn.Module]:
    """The norms inside a timm ViT, BEiT or EVA attention that the model has
    (``q_norm``, ``k_norm`` of ``qk_norm``; ``norm`` of ``scale_attn_norm``
    / ``scale_attn_inner``), for :attr:`BlockParts.attention_norms`: the
    explicit forwards call them, so the LRP rules give them the norm rule."""
    norms = [getattr(attention, n, None) for n in ("q_norm", "k_norm", "norm")]
    return [m for m in norms if isinstance(m, nn.Module) and present(m)]


def pre_norm(model: Union[VisionTransformer, Beit, Eva]) -> Optional[nn.Module]:
    """The norm of a timm ViT or EVA between the positional sum and the first
    block (``norm_pre``), or None, for :attr:`EmbeddingParts.post_norm`."""
    norm = getattr(model, "norm_pre", None)
    return norm if present(norm) else None


def timm_gaps(model: Union[VisionTransformer, Beit, Eva]) -> List[str]:
    """The relevance gaps (:meth:`ViTAdapter.relevance_gaps`) of a timm ViT,
    BEiT or EVA: a gated MLP of an unknown layout (:func:`gate_gaps`). The
    SwiGLU product is routed (:func:`gated_mlp_forwards`), the norms inside
    the attention and ``norm_pre`` are block and embedding parts
    (:func:`attention_norms`, :func:`pre_norm`)."""
    return gate_gaps(timm_blocks(model))


def check_divisible(image_size: Tuple[int, int], patch_size: Tuple[int, int]) -> None:
    """Raise ``ValueError`` unless the image tiles into whole patches."""
    (h, w), (ph, pw) = image_size, patch_size
    if h < ph or w < pw or h % ph or w % pw:
        raise ValueError(
            f"image size {h}x{w} is not divisible by the patch size {ph}x{pw}; "
            "crop or resize the images"
        )


def check_fixed_size(
    image_size: Tuple[int, int], size: Sequence[int], model: str, hint: str = ""
) -> None:
    """Raise ``ValueError`` unless ``image_size`` is ``size``, the one image
    size that ``model`` (its name in the message, ``"timm model"``) takes;
    ``hint`` ends the message."""
    if tuple(image_size) != tuple(size):
        raise ValueError(
            f"this {model} takes {size[0]}x{size[1]} images, got "
            f"{image_size[0]}x{image_size[1]}{hint}"
        )


def pair(size: Union[int, Sequence[int], None]) -> Tuple[int, int]:
    """A size of a model's config (``patch_size``, ``image_size``: an int or
    a pair) as ``(h, w)``.

    Raises:
        TypeError: ``size`` is None (a config without it).
    """
    if size is None:
        raise TypeError("the model's config does not give this size")
    return _pair(size)


def is_timm(model: nn.Module, module: str, name: str) -> bool:
    """Whether ``model`` is an instance of timm's ``timm.models.<module>``
    class ``name`` (False where this timm has no such class)."""
    try:
        cls = getattr(importlib.import_module(f"timm.models.{module}"), name)
    except (ImportError, AttributeError):  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, cls)


def is_transformers(model: nn.Module, names: Container[str]) -> bool:
    """Whether ``model`` is a ``transformers`` model of one of the classes
    ``names`` (matched by name: ``transformers`` is not imported)."""
    cls = type(model)
    return cls.__module__.startswith("transformers.") and cls.__name__ in names


def hf_embeddings_forward(
    emb: Union[BeitEmbeddings, Dinov2Embeddings, Dinov2WithRegistersEmbeddings],
    tracer: Tracer,
    registers: int = 0,
) -> Callable[..., Tensor]:
    """``BeitEmbeddings.forward`` / ``Dinov2(WithRegisters)Embeddings.forward``
    of ``transformers`` with the positional sum routed through
    :meth:`Tracer.embed_add`: the class token joined, the position table
    (resized by the model's own ``interpolate_pos_encoding``) added, then the
    ``registers`` register tokens inserted after the class token."""

    def forward(
        pixel_values: Tensor, bool_masked_pos: Optional[Tensor] = None
    ) -> Tensor:
        if bool_masked_pos is not None:
            raise NotImplementedError(
                "bool_masked_pos is not supported by this explanation method"
            )
        B, _, height, width = pixel_values.shape
        x = emb.patch_embeddings(pixel_values)
        x = torch.cat((emb.cls_token.expand(B, -1, -1), x), dim=1)
        if emb.position_embeddings is not None:
            x = tracer.embed_add(x, emb.interpolate_pos_encoding(x, height, width))
        if registers:  # only Dinov2WithRegistersEmbeddings has register tokens
            tokens = cast("Dinov2WithRegistersEmbeddings", emb).register_tokens
            reg = tokens.expand(B, -1, -1)
            x = torch.cat((x[:, :1], reg, x[:, 1:]), dim=1)
        return emb.dropout(x)

    return forward


def hf_attention_forward(
    attention: nn.Module,
    layer: int,
    tracer: Tracer,
    projections: Tuple[nn.Module, nn.Module, nn.Module, nn.Module],
    head_dim: int,
    scale: float,
    dropout: float,
) -> Callable[..., Tuple[Tensor, None]]:
    """The ``forward`` of a ``transformers`` self-attention with separate
    query, key, value and output ``projections`` (``ViTAttention``,
    ``CLIPAttention`` and their kin) with the attention core routed through
    :meth:`Tracer.attention`; the attention ``dropout`` probability applies
    while ``attention`` is in training mode. Returns ``(output, None)`` as
    the module does."""
    q_proj, k_proj, v_proj, o_proj = projections

    def drop(a: Tensor) -> Tensor:
        return F.dropout(a, p=dropout, training=attention.training)

    def forward(
        hidden_states: Tensor, attention_mask: Optional[Tensor] = None, **kwargs: Any
    ) -> Tuple[Tensor, None]:
        shape = (*hidden_states.shape[:-1], -1, head_dim)
        q = q_proj(hidden_states).view(shape).transpose(1, 2)
        k = k_proj(hidden_states).view(shape).transpose(1, 2)
        v = v_proj(hidden_states).view(shape).transpose(1, 2)
        o = tracer.attention(
            layer,
            q,
            k,
            v,
            scale,
            mask=attention_mask,
            dropout=drop if attention.training and dropout > 0 else None,
        )
        o = o.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        return o_proj(o), None

    return forward


def hf_classifier_forward(
    encoder: nn.Module, logits: Callable[[Tensor], Tensor]
) -> Callable[..., Any]:
    """The ``forward`` of a ``transformers`` image classifier, logits only:
    ``logits`` of the ``encoder``'s last hidden state (the head, with the
    pooling routed through the tracer), in an ``ImageClassifierOutput``."""

    def forward(
        pixel_values: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        **kwargs: Any,
    ) -> Any:
        if labels is not None:
            raise NotImplementedError("labels are not supported while tracing")
        from transformers.modeling_outputs import ImageClassifierOutput

        seq = encoder(pixel_values, **kwargs).last_hidden_state
        return ImageClassifierOutput(logits=logits(seq))

    return forward
