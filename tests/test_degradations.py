"""Edge cases of `ldrps_nb.degradations` that are awkward in the notebook: bad inputs, registry contract, JSON params."""
import json
from functools import partial

import pytest
import torch

from ldrps_nb.core import ConfigError, ImageError, make_generator, read_image
from ldrps_nb.degradations import (DEGRADATIONS, Degraded, blur, compose, degrade, depth_proxy, gaussian_noise, grey,
                                   haze, jpeg, low_light, synthetic_scene)


@pytest.fixture
def img() -> torch.Tensor:
    return synthetic_scene(48, 64)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_every_degradation_keeps_shape_range_and_records_json_params(name, img):
    out = degrade(img, name, generator=make_generator(0))
    assert isinstance(out, Degraded) and out.name == name
    assert out.image.shape == img.shape and out.image.dtype == img.dtype
    assert 0 <= out.image.min() and out.image.max() <= 1
    json.dumps(out.params)  # plain values only


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_every_degradation_is_deterministic_for_a_seed(name, img):
    a = degrade(img, name, generator=make_generator(11)).image
    b = degrade(img, name, generator=make_generator(11)).image
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [torch.rand(3, 8, 8), torch.rand(1, 1, 8, 8), torch.rand(1, 4, 8, 8),
                                 torch.randint(0, 255, (1, 3, 8, 8)), torch.full((1, 3, 8, 8), 1.5), "not a tensor"])
@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_bad_images_raise_image_error(name, bad):
    with pytest.raises(ImageError):
        degrade(bad, name)


@pytest.mark.parametrize("name,params,needle", [
    ("low_light", dict(gain=-1), "gain"), ("low_light", dict(gamma=0), "gamma"), ("low_light", dict(peak=0), "peak"),
    ("low_light", dict(read_noise=-0.1), "read_noise"), ("haze", dict(beta=-1), "beta"),
    ("haze", dict(airlight=1.2), "airlight"), ("haze", dict(luminance_weight=2), "luminance_weight"),
    ("gaussian_noise", dict(sigma=300), "sigma"), ("grey", dict(standard="hdr"), "standard"),
    ("blur", dict(sigma=-2), "sigma"), ("blur", dict(kernel_size=2.5), "kernel_size"),
    ("jpeg", dict(quality=101), "quality"), ("jpeg", dict(quality=50.5), "quality"),
    ("jpeg", dict(subsampling="4:1:1"), "subsampling"), ("blur", dict(radius=3), "radius"),
])
def test_bad_parameters_raise_config_error_naming_them(img, name, params, needle):
    with pytest.raises(ConfigError, match=needle):
        degrade(img, name, **params)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        DEGRADATIONS["mine"] = blur  # type: ignore[index]


def test_noise_draws_depend_on_generator_state_not_global_rng(img):
    torch.manual_seed(0); a = gaussian_noise(img, generator=make_generator(3)).image
    torch.manual_seed(1); b = gaussian_noise(img, generator=make_generator(3)).image
    assert torch.equal(a, b)
    g = make_generator(3)
    first, second = gaussian_noise(img, generator=g).image, gaussian_noise(img, generator=g).image
    assert not torch.equal(first, second)  # the generator advances


def test_low_light_without_noise_is_the_tone_curve(img):
    out = low_light(img, gain=0.5, gamma=2.0, peak=None, read_noise=0).image
    torch.testing.assert_close(out, (0.5 * img) ** 2)


def test_haze_depth_shapes_and_limits(img):
    h, w = img.shape[-2:]
    for depth in (torch.ones(h, w), torch.ones(1, h, w), torch.ones(1, 1, h, w), torch.tensor(1.0)):
        out = haze(img, beta=1.0, airlight=(1.0, 0.5, 0.0), depth=depth).image
        expected = img * torch.exp(torch.tensor(-1.0)) + torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1) * (1 - torch.exp(torch.tensor(-1.0)))
        torch.testing.assert_close(out, expected)
    with pytest.raises(ConfigError, match="depth"):
        haze(img, depth=-torch.ones(h, w))
    with pytest.raises(ConfigError, match="depth"):
        haze(img, depth=[[1.0]])
    d = depth_proxy(img)
    assert d.shape == (1, 1, h, w) and 0 <= d.min() and d.max() <= 1
    assert d[..., 0, :].mean() > d[..., -1, :].mean()  # the top is farther than the bottom


def test_grey_709_and_601_differ_and_are_grey(img):
    a, b = grey(img, standard="601").image, grey(img, standard="709").image
    assert not torch.equal(a, b)
    for x in (a, b):
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_blur_tiny_image_and_explicit_kernel():
    tiny = torch.rand(1, 3, 3, 3)
    assert blur(tiny, sigma=2).image.shape == tiny.shape  # pad larger than the image: replicate
    assert blur(tiny, sigma=1, kernel_size=3).params["kernel_size"] == 3


def test_jpeg_batch_matches_single_images(img):
    batch = torch.cat([img, img.flip(-1)])
    out = jpeg(batch, quality=30).image
    torch.testing.assert_close(out[1:], jpeg(img.flip(-1), quality=30).image)


def test_compose_callables_and_bad_steps(img):
    out = compose(img, [partial(gaussian_noise, sigma=5), lambda x: x.flip(-1)], generator=make_generator(0))
    assert out.name == "gaussian_noise+<lambda>"
    assert out.params["steps"][1] == {"name": "<lambda>", "params": {}}
    with pytest.raises(ConfigError, match="returned"):
        compose(img, [lambda x: 3])
    with pytest.raises(ImageError):
        compose(img, [lambda x: x[:, :1]])
    with pytest.raises(ConfigError, match="step"):
        compose(img, [42])
    with pytest.raises(ConfigError, match="unknown degradation"):
        compose(img, ["rain"])


def test_on_a_kodak_image(shared_dir):
    x = read_image(shared_dir / "data" / "kodak24" / "kodim01.png")[..., :128, :128]
    y = gaussian_noise(x, sigma=30, clip=False, generator=make_generator(0)).image
    assert abs((y - x).std().item() * 255 - 30) < 1.0
