r"""Explaining similarities: image-text (CLIP, SigLIP) and image-image.

:func:`text_similarity`, :func:`image_similarity` and
:func:`embedding_similarity` turn a model whose output is an image embedding
(an open_clip or Hugging Face CLIP/SigLIP model, a timm or Hugging Face
backbone without classifier) into a **similarity model**: a callable mapping
images ``(B, C, H, W)`` to one score per reference ``(B, K)``, whose
``target=k`` names reference ``k`` (prompt ``k``). It is the one way every
method receives "the model and this output function": pass it in place of the
model,

>>> sim = cv.text_similarity(model, ["a red disk", "a blue square"], tokenizer)
>>> maps = cv.GenericAttention(sim, start_layer=-1).attribute(images, target=1)
>>> ig = captum.attr.IntegratedGradients(sim).attribute(images, target=1)

and the metrics take it as their ``forward_func``. The references are embedded
once, when the similarity model is made, never per image or per call.

**Score.** ``score="logits"`` (the default of :func:`text_similarity`) is the
model's own image-text logit, :math:`\tau \cos(f(x), t_k) + b` with its learnt
temperature :math:`\tau = \exp(\text{logit\_scale})` and (SigLIP) bias
:math:`b`: what ``model(images, texts)`` returns as ``logits_per_image``, what
Chefer et al.'s CLIP protocol differentiates, and what a softmax over prompts
(CLIP's zero-shot probabilities, ATMAN's cross-entropy) reads. ``"cosine"``
(the default of the image-image similarities) is :math:`\cos(f(x), r_k)`;
``"dot"`` the plain :math:`f(x)^\top r_k` with the references as given.
Gradient methods scale with :math:`\tau`; maps that are normalised per image
(LeGrad, the visualisations) do not depend on it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import adapters
from ..adapters import SCORES, SimilarityAdapter, ViTAdapter
from ._base import check_choice

__all__ = ["text_similarity", "image_similarity", "embedding_similarity"]


def _image_adapter(model: nn.Module, what: str) -> ViTAdapter:
    adapter = adapters.get(model)
    if isinstance(adapter, SimilarityAdapter):
        raise TypeError(
            f"{what} takes the model, not a similarity model made from it "
            f"({adapter!r})"
        )
    return adapter


def text_similarity(
    model: nn.Module,
    texts: Sequence[str],
    tokenizer: Any = None,
    score: str = "logits",
) -> SimilarityAdapter:
    r"""The image-text similarity of a CLIP-style model as a model to explain.

    Maps images ``(B, C, H, W)`` to one score per prompt ``(B, P)``, so that
    ``target=k`` explains prompt ``k`` (see the module docstring). The
    prompts are tokenized and embedded once, here.

    Args:
        model (torch.nn.Module): an open_clip ``CLIP`` / ``CustomTextCLIP``
            or a Hugging Face ``CLIPModel`` / ``SiglipModel`` /
            ``Siglip2Model`` (with its text tower), e.g. the embedded
            ``zoo.load("synthetic_clip").model``.
        texts (sequence of str): the prompts, at least one.
        tokenizer (callable, optional): the model's tokenizer: open_clip's
            (``open_clip.get_tokenizer(name)``, a callable returning token
            ids) or a ``transformers`` tokenizer (SigLIP prompts are padded to
            the full length, as the model was trained). Default: None
            (open_clip models with CLIP's BPE vocabulary: open_clip's
            ``SimpleTokenizer`` at the model's context length; otherwise
            required)
        score (str, optional): ``"logits"`` (the model's logit scale and
            bias on the cosine similarity), ``"cosine"`` or ``"dot"`` (the
            unnormalised image embedding against the unnormalised text
            embedding). Default: ``"logits"``

    Returns:
        SimilarityAdapter: callable, ``(B, P)`` scores; ``.names`` holds the
        prompts.

    Raises:
        ValueError: no prompt, a prompt that is not a string, a model without
            a text tower, an unknown score;
            :class:`~captum_vit.adapters.TokenizerMismatchError` (a
            ``ValueError``) when the tokenizer's ids do not fit the model's
            text tower (vocabulary or context length).

    Examples::

        >>> import captum_vit as cv
        >>> from captum_vit import zoo
        >>> clip, transform, tokenizer, meta = zoo.load("synthetic_clip")
        >>> sim = cv.text_similarity(clip, ["a red disk", "a blue square"], tokenizer)
        >>> sim(transform(images)).shape
        torch.Size([8, 2])
        >>> cv.LeGrad(sim).attribute(transform(images), target=0).shape
        torch.Size([8, 3, 64, 64])
    """
    check_choice("score", score, SCORES)
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("text_similarity needs at least one prompt; got none")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"prompts must be strings; got {type(bad[0]).__name__}")
    adapter = _image_adapter(model, "text_similarity")
    tower = adapter.text_tower()
    if tower is None:
        raise ValueError(
            f"{type(adapter.model).__name__} has no text tower: text prompts need a "
            "CLIP-style model with both towers (open_clip CLIP, transformers "
            "CLIPModel / SiglipModel); for image-image similarity use "
            "image_similarity"
        )
    embeddings = tower.encode(texts, tokenizer)
    bias = tower.logit_bias()
    return SimilarityAdapter(
        adapter,
        embeddings,
        score,
        scale=tower.logit_scale(),
        bias=bias,
        names=texts,
        kind="prompts",
    )


def embedding_similarity(
    model: nn.Module,
    embeddings: Tensor,
    score: str = "cosine",
    names: Optional[Sequence[str]] = None,
) -> SimilarityAdapter:
    r"""The similarity of the model's image embedding to given reference
    embeddings ``(K, D)`` (text embeddings computed elsewhere, class
    prototypes, a retrieval index), as a model to explain.

    Args:
        model (torch.nn.Module): a model whose output is an image embedding:
            a CLIP-style model (its image embedding), a timm or Hugging Face
            backbone built without classifier (``num_classes=0``: its pooled
            features).
        embeddings (Tensor): ``(K, D)`` reference embeddings in the space of
            the model's output.
        score (str, optional): ``"cosine"`` or ``"dot"`` (``"logits"``
            needs the model's logit scale: :func:`text_similarity`).
            Default: ``"cosine"``
        names (sequence of str, optional): a name per reference. Default: None

    Returns:
        SimilarityAdapter: callable, ``(B, K)`` scores.

    Raises:
        ValueError: not a ``(K, D)`` float tensor with ``K >= 1`` and the
            model's embedding width.
    """
    if check_choice("score", score, SCORES) == "logits":
        raise ValueError("score='logits' needs the model's logit scale: use cosine")
    adapter = _image_adapter(model, "embedding_similarity")
    if (
        not isinstance(embeddings, Tensor)
        or embeddings.dim() != 2
        or not embeddings.is_floating_point()
        or embeddings.shape[0] == 0
    ):
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else None
        raise ValueError(
            f"embeddings must be a (K, D) float tensor with K >= 1, got {shape}"
        )
    width = adapter.num_classes
    if width and embeddings.shape[1] != width:
        raise ValueError(
            f"the references are {embeddings.shape[1]}-dimensional, the model's "
            f"output is {width}-dimensional"
        )
    weight = adapter.embedding_parts().patch.weight
    assert isinstance(weight, Tensor)  # the patch embedding: a conv or linear layer
    device = weight.device
    return SimilarityAdapter(
        adapter,
        embeddings.to(device=device, dtype=adapter.dtype),
        score,
        names=names,
        kind="references",
    )


def image_similarity(
    model: nn.Module,
    references: Tensor,
    score: str = "cosine",
    names: Optional[Sequence[str]] = None,
) -> SimilarityAdapter:
    r"""The similarity of each image to reference images (retrieval,
    DINO-style correspondence), as a model to explain: ``target=k`` explains
    what in an image makes it similar to reference image ``k``.

    The references are embedded once, here, by the model's own forward
    (without gradients); see :func:`embedding_similarity`.

    Args:
        model (torch.nn.Module): a model whose output is an image embedding
            (see :func:`embedding_similarity`).
        references (Tensor): ``(K, C, H, W)`` reference images, in the
            model's input space.
        score (str, optional): ``"cosine"`` or ``"dot"``. Default:
            ``"cosine"``
        names (sequence of str, optional): a name per reference. Default: None

    Returns:
        SimilarityAdapter: callable, ``(B, K)`` scores.

    Examples::

        >>> backbone = timm.create_model("vit_small_patch16_224.dino", num_classes=0)
        >>> sim = cv.image_similarity(backbone, query_images)
        >>> cv.GenericAttention(sim).attribute(gallery, target=0)
    """
    adapter = _image_adapter(model, "image_similarity")
    if not isinstance(references, Tensor) or references.dim() != 4:
        raise ValueError("references must be a batch of images (K, C, H, W)")
    if references.shape[0] == 0:
        raise ValueError("image_similarity needs at least one reference image")
    with torch.no_grad():
        embeddings = adapter.forward(references)
    return embedding_similarity(model, embeddings, score, names)
