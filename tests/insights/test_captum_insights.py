"""Registration of the captum_vit methods into Captum Insights (captum <= 0.8).

The first tests run everywhere, against a stand-in for
``captum.insights.attr_vis.config`` that has the shape of captum 0.8's module,
and call the registered classes exactly as captum 0.8's
``AttributionCalculation.calculate_attribution`` does. The last test runs the
real Insights code and is skipped where captum has no ``captum.insights``
(Captum 0.9 removed it).
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import pytest
import torch

from captum_vit.attr import create_method, list_methods
from captum_vit.insights import register_with_captum_insights
from captum_vit.insights._methods import method_spec
from tests.models import images, timm_vit


class NumberConfig(NamedTuple):
    value: int = 1
    limit: Tuple[Optional[int], Optional[int]] = (None, None)
    type: str = "number"


class StrEnumConfig(NamedTuple):
    value: str
    limit: List[str]
    type: str = "enum"


class StrConfig(NamedTuple):
    value: str
    type: str = "string"


class ConfigParameters(NamedTuple):
    params: Dict[str, Any]
    help_info: Optional[str] = None
    post_process: Optional[Dict[str, Any]] = None


@pytest.fixture()
def fake_insights(monkeypatch):
    """A stand-in for captum 0.8's ``captum.insights.attr_vis.config``."""
    config = types.ModuleType("captum.insights.attr_vis.config")
    config.NumberConfig = NumberConfig
    config.StrEnumConfig = StrEnumConfig
    config.StrConfig = StrConfig
    config.ConfigParameters = ConfigParameters
    config.ATTRIBUTION_NAMES_TO_METHODS = {"Integrated Gradients": object}
    config.ATTRIBUTION_METHOD_CONFIG = {}
    insights = types.ModuleType("captum.insights")
    attr_vis = types.ModuleType("captum.insights.attr_vis")
    attr_vis.config = config
    insights.attr_vis = attr_vis
    monkeypatch.setitem(sys.modules, "captum.insights", insights)
    monkeypatch.setitem(sys.modules, "captum.insights.attr_vis", attr_vis)
    monkeypatch.setitem(sys.modules, "captum.insights.attr_vis.config", config)
    return config


def _insights_calculate_attribution(config, name, arguments, model, data, label):
    """What captum 0.8's ``AttributionCalculation.calculate_attribution`` does."""
    method = config.ATTRIBUTION_NAMES_TO_METHODS[name](model)
    post = config.ATTRIBUTION_METHOD_CONFIG[name].post_process or {}
    arguments = {k: post[k](v) if k in post else v for k, v in arguments.items()}
    if "baselines" in inspect.signature(method.attribute).parameters:
        arguments["baselines"] = None
    return method.attribute.__wrapped__(
        method, data, additional_forward_args=None, target=label, **arguments
    )


def test_register_adds_every_method_with_form_fields(fake_insights):
    added = register_with_captum_insights()
    assert "Attention Rollout" in added and "Integrated Gradients" not in added
    runnable = [n for n in list_methods() if method_spec(n)["available"]]
    assert len(added) == len(runnable)
    assert "Integrated Gradients" in fake_insights.ATTRIBUTION_NAMES_TO_METHODS
    cfg = fake_insights.ATTRIBUTION_METHOD_CONFIG["Attention Rollout"]
    assert cfg.params["head_fusion"] == StrEnumConfig("mean", ["mean", "max", "min"])
    assert cfg.params["discard_ratio"] == NumberConfig(0.0, (None, None))
    assert register_with_captum_insights(["rollout"]) == ["Attention Rollout"]
    with pytest.raises(ValueError, match="unknown method"):
        register_with_captum_insights(["nope"])


def test_registered_methods_run_as_insights_calls_them(fake_insights):
    register_with_captum_insights(["rollout", "raw_attention"])
    model, x = timm_vit(), images(1)
    out = _insights_calculate_attribution(
        fake_insights,
        "Attention Rollout",
        {"head_fusion": "max", "discard_ratio": "0.5", "start_layer": 1},
        model,
        (x,),
        torch.tensor([2]),
    )
    assert isinstance(out, tuple) and out[0].shape == x.shape
    expected = create_method(
        "rollout", model, head_fusion="max", discard_ratio=0.5, start_layer=1
    ).attribute(x, target=2)
    torch.testing.assert_close(out[0], expected)
    # the defaults, as the form sends them
    name = "Raw Attention"
    args = {
        k: v.value
        for k, v in fake_insights.ATTRIBUTION_METHOD_CONFIG[name].params.items()
    }
    out = _insights_calculate_attribution(
        fake_insights, name, args, model, (x,), torch.tensor([1])
    )
    expected = create_method("raw_attention", model).attribute(x, target=1)
    torch.testing.assert_close(out[0], expected)


def test_without_captum_insights_the_error_says_what_to_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.insights", None)
    with pytest.raises(ImportError, match="AttributionVisualizer"):
        register_with_captum_insights()


def test_with_real_captum_insights():
    pytest.importorskip(
        "captum.insights.attr_vis.attribution_calculation",
        reason="optional: needs captum <= 0.8 with Insights (Captum 0.9 removed it)",
    )
    from captum.insights.attr_vis import config
    from captum.insights.attr_vis.attribution_calculation import AttributionCalculation
    from captum.insights.attr_vis.features import ImageFeature

    added = register_with_captum_insights()
    model, x = timm_vit(), images(1)
    feature = ImageFeature("Photo", baseline_transforms=[], input_transforms=[])
    calc = AttributionCalculation([model], [str(i) for i in range(5)], [feature])
    for name in added:
        args = {
            k: v.value for k, v in config.ATTRIBUTION_METHOD_CONFIG[name].params.items()
        }
        attr = calc.calculate_attribution(
            None, (x,), None, torch.tensor([1]), name, args, model
        )
        assert attr[0].shape == x.shape, name
