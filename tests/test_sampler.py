"""`recurrent_sample` on the tiny random backbone: every preset, any size, determinism, errors, callbacks."""
import pytest
import torch

from ldrps_nb.backbone import tiny_backbone
from ldrps_nb.core import ConfigError, ImageError, NumericalError, save_image
from ldrps_nb.losses import vgg_perceptual
from ldrps_nb.posterior import LOSS_KEYS, StepRecord
from ldrps_nb.sampler import Restoration, recurrent_sample

FAST = dict(steps=4, recurrences=1, progress=False)


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()


@pytest.fixture(scope="module")
def vgg():
    return vgg_perceptual(None)


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, 48, 80, generator=g) * 0.3).clamp(0, 1)


@pytest.mark.parametrize("preset", ["lowlight", "dehaze", "denoise", "colorise"])
def test_presets_on_non_square_input(backbone, vgg, image, preset):
    res = recurrent_sample(image, "a test", backbone=backbone, preset=preset, perceptual=vgg, **FAST)
    assert isinstance(res, Restoration) and res.preset.name == preset
    assert res.image.shape == (1, 3, 48, 80) and all(p.shape == (1, 3, 48, 80) for p in res.passes)
    assert len(res.passes) == len(res.latents) == 2 and res.latents[0].shape == (2, 4, 8, 8)
    assert torch.isfinite(res.image).all() and 0 <= res.image.min() and res.image.max() <= 1
    assert [h["t"] for h in res.history] == [751, 501, 251, 1, 251, 1]
    assert len(res.timings["passes"]) == 2 and res.timings["total"] > 0
    assert res.reference_compat is False and res.prompt == "a test"


def test_colorise_keeps_the_input_luma(backbone, vgg):
    "The colorise preset hands back every pass with the grey input's luma (clamping aside); the others do not."
    from ldrps_nb.degradations import luma
    g = torch.Generator().manual_seed(1)
    grey = (0.3 + 0.4 * torch.rand(1, 1, 48, 80, generator=g)).expand(1, 3, 48, 80)
    off = lambda p: (luma(p) - luma(grey)).abs().mean().item()
    res = recurrent_sample(grey, "a test", backbone=backbone, preset="colorise", perceptual=vgg, **FAST)
    assert all(off(p) < 0.01 for p in res.passes), [off(p) for p in res.passes]
    res = recurrent_sample(grey, "a test", backbone=backbone, preset="colorise", perceptual=vgg, luma_from_input=False, **FAST)
    assert all(off(p) > 0.02 for p in res.passes), [off(p) for p in res.passes]


def test_output_pass_nearest_input(backbone, vgg, image):
    "output_pass='nearest_input' returns the pass nearest y; the sampling and every pass are the same as with 'last'."
    kw = dict(backbone=backbone, perceptual=vgg, resolution=32, preset="denoise", steps=4, recurrences=3, progress=False)
    last, near = recurrent_sample(image, "x", **kw), recurrent_sample(image, "x", output_pass="nearest_input", **kw)
    assert all(torch.equal(a, b) for a, b in zip(last.passes, near.passes)) and last.residuals == near.residuals
    expected = [((p - image) ** 2).mean().item() for p in near.passes]
    assert near.residuals == pytest.approx(expected)
    assert near.returned_pass() == min(range(4), key=expected.__getitem__) and last.returned_pass() == 3
    assert torch.equal(near.image, near.passes[near.returned_pass()]) and torch.equal(last.image, last.passes[-1])
    assert [near.returned_pass(k) for k in range(4)] == [min(range(k + 1), key=expected.__getitem__) for k in range(4)]
    with pytest.raises(ConfigError, match="recurrences must be in 0..3"):
        near.returned_pass(4)
    with pytest.raises(ConfigError, match="output_pass"):
        recurrent_sample(image, "x", output_pass="best", **kw)


def test_output_window_chooses_pixel_by_pixel(backbone, vgg, image):
    "output_window: each pixel from the pass nearest y around it; the same passes; every k's image and map reported."
    from ldrps_nb.degradations import _blur
    kw = dict(backbone=backbone, perceptual=vgg, resolution=32, preset="denoise", steps=4, recurrences=3, progress=False)
    near = recurrent_sample(image, "x", output_pass="nearest_input", **kw)
    local = recurrent_sample(image, "x", output_pass="nearest_input", output_window=1.5, **kw)
    assert all(torch.equal(a, b) for a, b in zip(near.passes, local.passes)) and torch.equal(local.input, image)
    stack = torch.cat(local.passes)
    expected = _blur(((stack - image) ** 2).sum(1, keepdim=True), 1.5).argmin(0, keepdim=True)
    assert torch.equal(local.pass_map(), expected)
    assert torch.equal(local.image, stack.gather(0, expected.expand(1, 3, 48, 80)))
    shares = local.pass_shares()
    assert len(shares) == 4 and sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert local.returned_pass() == (int(expected.unique()) if expected.unique().numel() == 1 else None)
    for k in range(4):
        assert torch.equal(local.output(k), stack.gather(0, local.pass_map(k).expand(1, 3, 48, 80)))
        assert local.pass_map(k).max() <= k and local.pass_shares(k)[k + 1:] == [0.0] * (3 - k)
    assert torch.equal(local.output(0), local.passes[0]) and local.returned_pass(0) == 0
    last = recurrent_sample(image, "x", output_window=1.5, **kw)  # "last" ignores the window
    assert torch.equal(last.image, last.passes[-1]) and last.returned_pass() == 3
    for bad, msg in [(0.0, "output_window must be None or > 0"), ("wide", "output_window must be a number or None")]:
        with pytest.raises(ConfigError, match=msg):
            recurrent_sample(image, "x", output_window=bad, **kw)


def test_auto_on_a_list_groups_by_preset(backbone, vgg, image):
    "preset='auto' on a list: one call per chosen preset, results and callback indices in the order given."
    kw = dict(backbone=backbone, perceptual=vgg, resolution=32, **FAST)
    noisy = image / 0.3  # uniform noise in [0, 1]
    records = []
    res = recurrent_sample([noisy, image, noisy[..., :40]], ["n", "d", "n2"], preset="auto", callback=records.append, **kw)
    assert [r.preset.name for r in res] == [r.auto["preset"] for r in res] == ["denoise", "lowlight", "denoise"]
    assert [r.prompt for r in res] == ["n", "d", "n2"] and res[2].image.shape == (1, 3, 48, 40)
    assert [sum(rec.image_index == i for rec in records) for i in range(3)] == [len(r.history) for r in res]
    alone = recurrent_sample(image, "d", preset="lowlight", **kw)
    assert torch.equal(res[1].image, alone.image)  # alone in its group: exactly the single-image run


def test_same_seed_same_output(backbone, vgg, image):
    kw = dict(backbone=backbone, perceptual=vgg, resolution=32, **FAST)
    a, b = recurrent_sample(image, "x", **kw), recurrent_sample(image, "x", **kw)
    assert torch.equal(a.image, b.image) and all(torch.equal(u, v) for u, v in zip(a.latents, b.latents))
    assert a.history == b.history
    c = recurrent_sample(image, "x", seed=a.seed + 1, **kw)
    assert not torch.equal(a.latents[-1], c.latents[-1])


def test_unknown_override_is_config_error(backbone, vgg, image):
    with pytest.raises(ConfigError, match="guidance_weight"):
        recurrent_sample(image, backbone=backbone, perceptual=vgg, guidance_weight=2, **FAST)
    with pytest.raises(ConfigError, match="unknown preset"):
        recurrent_sample(image, backbone=backbone, perceptual=vgg, preset="sharpen", **FAST)


def test_nan_perceptual_is_numerical_error(backbone, image):
    nan = lambda a, b: torch.tensor(float("nan"))
    with pytest.raises(NumericalError, match=r"pass 0 step 0 \(t=751\)"):
        recurrent_sample(image, backbone=backbone, perceptual=nan, resolution=32, **FAST)


def test_nan_guidance_is_numerical_error(backbone, vgg, image):
    # t1 above every timestep: the guidance runs at the first step; a NaN weight makes its loss NaN
    with pytest.raises(NumericalError, match="guidance loss is not finite"):
        recurrent_sample(image, backbone=backbone, perceptual=vgg, resolution=32, t1=1000, w_l2=float("nan"), **FAST)


def test_callback_receives_step_records(backbone, vgg, image):
    records = []
    res = recurrent_sample(image, "x", backbone=backbone, perceptual=vgg, resolution=32, callback=records.append, **FAST)
    assert len(records) == len(res.history) == 6 and all(isinstance(r, StepRecord) for r in records)
    assert [(r.pass_index, r.step_index) for r in records] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert [r.stage for r in records[:2]] == ["fpam_only", "guided"]
    r = records[-1]
    assert set(r.losses) == set(LOSS_KEYS)
    assert r.x0_image.shape == r.fpam_output.shape == (2, 3, 32, 32) and r.target.shape == (1, 3, 32, 32)
    assert r.x0_image.device.type == "cpu" and not r.x0_image.requires_grad


def test_path_input_and_bad_inputs(backbone, vgg, image, tmp_path):
    p = save_image(image, tmp_path / "in.png")
    res = recurrent_sample(p, "x", backbone=backbone, perceptual=vgg, resolution=32, **FAST)
    assert res.image.shape == (1, 3, 48, 80)
    with pytest.raises(ImageError):
        recurrent_sample(torch.rand(1, 1, 8, 8), backbone=backbone, perceptual=vgg, **FAST)
    with pytest.raises(ImageError):
        recurrent_sample(image + 2, backbone=backbone, perceptual=vgg, **FAST)
    with pytest.raises(ConfigError, match="multiple of"):
        recurrent_sample(image, backbone=backbone, perceptual=vgg, resolution=40, **FAST)


def test_auto_and_prompt_policy(backbone, vgg, image):
    kw = dict(backbone=backbone, perceptual=vgg, resolution=32, **FAST)
    res = recurrent_sample(image * 0.2, "x", preset="auto", **kw)
    assert res.auto["preset"] == "lowlight" == res.preset.name and "luminance" in res.auto["reason"]
    compat = recurrent_sample(image, "a hazy street", preset="dehaze", reference_compat=True, **kw)
    assert (compat.caption, compat.prompt, compat.preset.x0_from) == ("a hazy street", "", "updated_latent")
    ours = recurrent_sample(image, None, preset="dehaze", captioner=lambda img: "a street", **kw)
    assert (ours.caption, ours.prompt, ours.preset.x0_from) == ("a street", "a street", "current_latent")


def test_fpam_init_identity(backbone, vgg, image):
    """`fpam_init="identity"`: F-PAM starts as the identity (one training step away from it at the first record), the
    run stays deterministic, a given `fpam_state` still wins, and a bad value is a one-line ConfigError."""
    from ldrps_nb.fpam import FPAM, kaiming_init_
    first = {}
    def watch(r):
        if r.step_index == 0 and r.pass_index == 0: first["gap"] = (r.fpam_output - r.x0_image).abs().mean().item()
    kw = dict(backbone=backbone, perceptual=vgg, resolution=32, **FAST)
    a = recurrent_sample(image, "a test", preset="dehaze", fpam_init="identity", callback=watch, **kw)
    near = first["gap"]  # one Adam step away from F(x) = x
    recurrent_sample(image, "a test", preset="dehaze", callback=watch, **kw)
    assert near < first["gap"] / 4, (near, first)  # a Kaiming draw is nowhere near x
    b = recurrent_sample(image, "a test", preset="dehaze", fpam_init="identity", **kw)
    assert torch.equal(a.image, b.image)
    state = kaiming_init_(FPAM(), torch.Generator().manual_seed(5)).state_dict()
    c = recurrent_sample(image, "a test", preset="dehaze", fpam_init="identity", fpam_state=state, **kw)
    d = recurrent_sample(image, "a test", preset="dehaze", fpam_state=state, **kw)
    assert torch.equal(c.image, d.image)
    with pytest.raises(ConfigError, match="fpam_init must be 'kaiming' or 'identity'"):
        recurrent_sample(image, "a test", preset="dehaze", fpam_init="zeros", **kw)
