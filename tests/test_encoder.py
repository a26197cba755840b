import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from captioning.models.encoder import (
    ImageEncoder,
    InitialState,
    build_classifier,
    build_transform,
    default_weights,
    ensure_weights_cached,
)


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    return ImageEncoder("mobilenet_v2", pretrained=True).eval()


def test_encoder_has_no_classifier_head(encoder):
    assert not any(isinstance(m, nn.Linear) for m in encoder.modules())
    with torch.inference_mode():
        features = encoder(torch.randn(2, 3, 96, 96))
    assert features.shape == (2, 1280)  # pooled body output, not 1000 class scores


def test_pretrained_weights_are_imagenet(encoder):
    """The same weights, with the head still on, call scikit-image's coffee photo an espresso."""
    from skimage import data

    weights = default_weights("mobilenet_v2")
    classifier = build_classifier("mobilenet_v2").eval()
    image = weights.transforms()(torch.from_numpy(data.coffee()).permute(2, 0, 1)).unsqueeze(0)
    with torch.inference_mode():
        label = weights.meta["categories"][classifier(image).argmax().item()]
    assert label == "espresso"
    body_state = {
        k.removeprefix("features."): v for k, v in classifier.state_dict().items() if k.startswith("features.")
    }
    for name, tensor in encoder.body.state_dict().items():
        assert torch.equal(tensor, body_state[name]), name


def test_initial_state_depends_on_the_image(encoder):
    project = InitialState(encoder.feature_dim, num_layers=2, hidden_dim=8, state_tensors=2)
    images = torch.stack([torch.zeros(3, 64, 64), torch.randn(3, 64, 64)])
    with torch.inference_mode():
        h0, c0 = project(encoder(images))
    assert h0.shape == c0.shape == (2, 2, 8)  # (layers, batch, hidden)
    assert not torch.allclose(h0[:, 0], h0[:, 1])
    assert not torch.allclose(c0[:, 0], c0[:, 1])


def test_spatial_grid_and_fine_tuning_blocks():
    encoder = ImageEncoder("mobilenet_v2", pretrained=False, spatial_grid=2, trainable_blocks=2)
    assert encoder.feature_dim == 1280 * 4
    trainable = [any(p.requires_grad for p in block.parameters()) for block in encoder.body]
    assert trainable == [False] * (len(encoder.body) - 2) + [True, True]
    encoder.train()
    assert not encoder.body[0].training and encoder.body[-1].training  # frozen batch-norm stays in eval


def test_transform_keeps_the_whole_picture_and_uses_the_weights_statistics():
    transform = build_transform("mobilenet_v2", 32)
    image = Image.new("RGB", (64, 40), (255, 0, 0))
    tensor = transform(image)
    assert tensor.shape == (3, 32, 32)
    mean, std = default_weights("mobilenet_v2").transforms().mean, default_weights("mobilenet_v2").transforms().std
    assert tensor[0, 0, 0].item() == pytest.approx((1 - mean[0]) / std[0], abs=1e-3)


def test_offline_weights_seed_an_empty_hub_cache(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        path = ensure_weights_cached(default_weights("mobilenet_v2"))
        assert path == Path(tmp_path) / "checkpoints" / "mobilenet_v2-b0353104.pth"
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")
    finally:
        torch.hub.set_dir(old)


def test_missing_weights_without_network_say_what_to_do(tmp_path, monkeypatch):
    # A proxy on a closed local port: any download fails at once, as it does offline.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="--model.pretrained false") as error:
            ensure_weights_cached(default_weights("resnet18"))
        assert "resnet18-f37072fd.pth" in str(error.value)
    finally:
        torch.hub.set_dir(old)
