"""Model loading for the command line and the benchmark: the embedded default,
a timm name (``pretrained=True``) or a local checkpoint file.

What a user can get wrong (a missing or unreadable file, a whole pickled model
instead of weights, a checkpoint of another architecture, an unknown timm
name, no network for pretrained weights) raises :class:`ModelLoadError` (or
``FileNotFoundError``) with one sentence saying what to do, checked before
anything slow happens.
"""

from __future__ import annotations

import difflib
import json
import os
import pickle
import re
import socket
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch

#: The embedded default model of :mod:`captum_vit.zoo`.
DEFAULT_MODEL = "synthetic_vit"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


#: Seconds to wait for the weights' host before declaring the network absent.
NETWORK_TIMEOUT = 3.0


class ModelLoadError(ValueError):
    """The model cannot be loaded as asked; the message says why and what to do."""


class LoadedModel(NamedTuple):
    r"""A model ready to explain, with what is needed to feed it.

    Attributes:
        model (torch.nn.Module): the model in eval mode; it takes normalised
            images.
        transform (torch.nn.Module): maps float ``[0, 1]`` images to the model's
            input (:class:`captum_vit.zoo.Normalize`).
        classes (list[str]): class names, by output index.
        mean (tuple[float, ...]): normalisation mean of ``transform``.
        std (tuple[float, ...]): normalisation std of ``transform``.
        image_size (int): side of the square input the model takes.
        source (str): what was loaded, in words.
        embedded (bool): ``True`` for an embedded zoo model (trained on the
            synthetic benchmark, whose labels it predicts).
        tokenizer (Callable, optional): the tokenizer of a vision-language
            model (``synthetic_clip``: explained through
            :func:`captum_vit.text_similarity` with prompts; ``classes`` is
            then empty); None for a classifier.
    """

    model: torch.nn.Module
    transform: torch.nn.Module
    classes: List[str]
    mean: tuple
    std: tuple
    image_size: int
    source: str
    embedded: bool
    tokenizer: Optional[Any] = None


def _state_dict_from_file(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(
                f"{path}: not a readable safetensors file ({e})"
            ) from None
    # weights_only: a checkpoint is data, never code to run
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if found:
            raise ModelLoadError(
                f"{path} holds a whole pickled object ({found.group(1)}, as "
                "torch.save(model) writes), not weights; loading it would run its "
                "code. Save the weights with torch.save(model.state_dict(), path) "
                "and pass them with --model-name ARCHITECTURE"
            ) from None
        raise ModelLoadError(
            f"{path}: not a PyTorch checkpoint (a state_dict saved by torch.save)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a PyTorch checkpoint ({e})") from None
    if isinstance(ckpt, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(
        isinstance(v, torch.Tensor) for v in ckpt.values()
    ):
        raise ModelLoadError(f"{path}: not a state_dict (a dict of tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in ckpt.items()}


def _load_fitting(
    model: torch.nn.Module, state: Dict[str, torch.Tensor], path: str, arch: str
) -> None:
    """``model.load_state_dict(state)``, or one sentence on why it does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or reshaped:
        parts = []
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape (checkpoint vs model)", reshaped),
        ):
            if keys:
                parts.append(f"{len(keys)} {what}, e.g. {', '.join(keys[:2])}")
        raise ModelLoadError(
            f"{path} does not fit --model-name {arch}: weights "
            + "; ".join(parts)
            + ". Give the architecture the checkpoint was saved from (and "
            "--img-size / --num-classes if it was trained with others)"
        )
    model.load_state_dict(state, strict=True)


def _check_timm_name(name: str, flag: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"{flag} {name!r} is neither a file, an embedded model nor a timm "
            f"model name{hint}"
        )


def _reachable(host: str, port: int = 443, timeout: float = NETWORK_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds
    (name resolution included)."""
    ok: List[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _cached_pretrained_file(
    name: str, cache_dir: Optional[str] = None
) -> Optional[str]:
    """A local copy of the pretrained weights of timm ``name`` (in the
    Hugging Face cache), or None."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    names = [getattr(cfg, "hf_hub_filename", None)]
    names += ["model.safetensors", "pytorch_model.bin"]
    for filename in [n for n in names if n]:
        found = try_to_load_from_cache(hub_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


def _create_pretrained(name: str, kwargs: Dict[str, Any]) -> torch.nn.Module:
    """timm ``name`` with pretrained weights, from the local cache when there,
    else downloaded: but only after a quick check that the hub is reachable,
    so that a machine without network fails in seconds, not after a minute of
    retries."""
    import timm

    hint = (
        " To explain a local copy of the weights instead, pass it as "
        f"--model FILE.pth (or .safetensors) --model-name {name}."
    )
    cached = _cached_pretrained_file(name)
    if cached is not None:
        overlay = dict(file=cached, custom_load=False)
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _reachable("huggingface.co"):
        why = "HF_HUB_OFFLINE is set" if offline else "huggingface.co is unreachable"
        raise ModelLoadError(
            f"cannot download the pretrained weights of {name!r}: {why} and they "
            "are not in the local Hugging Face cache." + hint
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as e:
        raise ModelLoadError(
            f"downloading the pretrained weights of {name!r} failed "
            f"({type(e).__name__}: {e})." + hint
        ) from None


def _num_classes(state: Dict[str, torch.Tensor]) -> Optional[int]:
    for key in ("head.weight", "head.fc.weight", "classifier.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


def _finish(
    model: torch.nn.Module,
    classes: Optional[Sequence[str]],
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    source: str,
    embedded: bool = False,
) -> LoadedModel:
    from ..zoo import Normalize

    model = model.eval()
    num = int(getattr(model, "num_classes", 0) or 0)
    names = list(classes) if classes is not None else [str(i) for i in range(num)]
    return LoadedModel(
        model,
        Normalize(mean, std),
        names,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        int(image_size),
        source,
        embedded,
    )


def load_model(
    spec: Optional[str] = None,
    model_name: Optional[str] = None,
    img_size: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> LoadedModel:
    r"""Load the model that ``captum-vit explain`` / ``benchmark`` explain.

    ``spec`` is one of:

    * ``None`` or the name of an embedded model (:func:`captum_vit.zoo.list_models`):
      the embedded default, trained on the synthetic benchmark, no download
      (the vision-language ``synthetic_clip`` comes with its tokenizer);
    * a local checkpoint file: a ``.safetensors`` file, or a timm-style
      ``state_dict`` file (``.pth``, ``.pt``, ``.bin``; a bare state dict or one
      under ``state_dict`` / ``model`` / ``state_dict_ema``, loaded with
      ``weights_only=True``). The architecture is the timm name ``model_name``;
      a ``.safetensors`` file written by :mod:`captum_vit.zoo.train` may instead
      have its JSON metadata (same name, ``.json``) next to it. The number of
      classes is read from the classifier weight when ``num_classes`` is None;
    * any other string: a timm model name, created with ``pretrained=True``:
      from the local Hugging Face cache when the weights are there, else
      downloaded, after a check (:data:`NETWORK_TIMEOUT` seconds) that the hub
      is reachable, so that a machine without network fails at once.

    Normalisation and input size come from the model's timm ``pretrained_cfg``
    (ImageNet statistics when it has none).

    Args:
        spec (str, optional): embedded model name, checkpoint path or timm name.
            Default: None (the embedded default)
        model_name (str, optional): timm architecture of a checkpoint.
            Default: None
        img_size (int, optional): input size passed to ``timm.create_model``
            for a checkpoint or timm name; for an embedded model it must be
            its own size. Default: None (the model's default)
        num_classes (int, optional): classes of a checkpoint's head.
            Default: None (read from the checkpoint)

    Returns:
        LoadedModel: model (eval mode), transform, classes, mean, std,
        image size, description.

    Raises:
        FileNotFoundError: ``spec`` names a checkpoint file that does not exist.
        ModelLoadError: an unreadable checkpoint, a whole pickled model, a
            checkpoint that does not fit ``model_name``, an unknown timm name,
            pretrained weights without network, an ``img_size`` the embedded
            model cannot take.

    Examples::

        >>> lm = load_model()  # the embedded default
        >>> lm.image_size, lm.classes[:2]
        (64, ['disk', 'square'])
        >>> lm = load_model("ckpt.pth", model_name="vit_tiny_patch16_224")
    """
    from .. import zoo

    if spec in zoo.list_models(kind="clip") and not os.path.exists(spec):
        return _load_clip(spec, img_size, num_classes)
    classifiers = zoo.list_models(kind="classifier")
    if spec is None or (spec in classifiers and not os.path.exists(spec)):
        from ..attr import describe

        name = spec or DEFAULT_MODEL
        zm = zoo.load(name)
        assert isinstance(zm, zoo.ZooModel)  # a classifier: its kind says so
        size = int(zm.meta["config"]["img_size"])
        if img_size is not None and int(img_size) != size:
            raise ModelLoadError(
                f"--img-size {img_size}: the embedded model {name!r} takes {size} px "
                "images (it was built and trained for that size); leave "
                "--img-size out (pictures are letterboxed to its size)"
            )
        if num_classes is not None and int(num_classes) != len(zm.classes):
            raise ModelLoadError(
                f"--num-classes {num_classes}: the embedded model {name!r} has "
                f"{len(zm.classes)} classes; leave --num-classes out"
            )
        return _finish(
            zm.model,
            zm.classes,
            zm.meta["mean"],
            zm.meta["std"],
            size,
            f"embedded model {name!r} ({describe(zm.model).num_layers}"
            f" blocks, trained on the synthetic benchmark)",
            embedded=True,
        )
    if spec is not None and os.path.isfile(spec):
        return _load_checkpoint(spec, model_name, img_size, num_classes)
    if spec is not None and (
        os.sep in spec or spec.endswith((".pth", ".pt", ".bin", ".safetensors"))
    ):
        raise FileNotFoundError(f"no checkpoint file {spec}")
    _check_timm_name(spec, "--model")
    kwargs: Dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _create_pretrained(spec, kwargs)
    return _from_timm_cfg(model, f"timm {spec!r} (pretrained)")


def _load_clip(
    name: str, img_size: Optional[int], num_classes: Optional[int]
) -> LoadedModel:
    """An embedded vision-language model, with its tokenizer (no classes)."""
    from .. import zoo

    zm = zoo.load(name)
    assert isinstance(zm, zoo.ZooCLIP)  # a vision-language model: its kind says so
    # zoo types the transform as a callable; it is a zoo.Normalize module
    assert isinstance(zm.transform, torch.nn.Module)
    size = int(zm.meta["config"]["vision_cfg"]["image_size"])
    if img_size is not None and int(img_size) != size:
        raise ModelLoadError(
            f"--img-size {img_size}: the embedded model {name!r} takes {size} px "
            "images; leave --img-size out"
        )
    if num_classes is not None:
        raise ModelLoadError(
            f"--num-classes: the embedded model {name!r} is a vision-language model "
            "without classes (it scores prompts: --text)"
        )
    depth = zm.meta["config"]["vision_cfg"]["layers"]
    return LoadedModel(
        zm.model,
        zm.transform,
        [],
        tuple(float(v) for v in zm.meta["mean"]),
        tuple(float(v) for v in zm.meta["std"]),
        size,
        f"embedded vision-language model {name!r} ({depth} blocks, trained on the "
        "captioned synthetic scenes)",
        True,
        zm.tokenizer,
    )


def _from_timm_cfg(model: torch.nn.Module, source: str) -> LoadedModel:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    mean = cfg.get("mean") or _IMAGENET_MEAN
    std = cfg.get("std") or _IMAGENET_STD
    size = None
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None):
        size = patch_embed.img_size[-1]
    if size is None:
        size = cfg.get("input_size", (3, 224, 224))[-1]
    return _finish(model, None, mean, std, size, source)


def _load_checkpoint(
    path: str,
    model_name: Optional[str],
    img_size: Optional[int],
    num_classes: Optional[int],
) -> LoadedModel:
    state = _state_dict_from_file(path)
    meta_path = os.path.splitext(path)[0] + ".json"
    if model_name is None and path.endswith(".safetensors"):
        if not os.path.exists(meta_path):
            raise ModelLoadError(
                f"{path}: give the timm architecture with --model-name "
                f"(or put the zoo metadata {meta_path} next to it)"
            )
        from ..zoo import _build

        with open(meta_path) as f:
            meta = json.load(f)
        vit = _build.build_model(meta["config"])
        _load_fitting(vit, state, path, f"(zoo metadata {meta_path})")
        return _finish(
            vit,
            meta.get("classes"),
            meta["mean"],
            meta["std"],
            meta["config"]["img_size"],
            f"checkpoint {path}",
        )
    if model_name is None:
        raise ModelLoadError(f"{path}: give the timm architecture with --model-name")
    import timm

    _check_timm_name(model_name, "--model-name")
    kwargs: Dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    n = num_classes if num_classes is not None else _num_classes(state)
    if n is not None:
        kwargs["num_classes"] = n
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    _load_fitting(model, state, path, model_name)
    return _from_timm_cfg(model, f"checkpoint {path} ({model_name})")
