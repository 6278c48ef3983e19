"""The pocket world restores for real on a CPU: the shipped models and presets, checked on test-split scenes."""
from functools import lru_cache

import torch

from ldrps_nb.evaluation import psnr
from ldrps_nb.pocket import (attribute_accuracy, denoiser_loss, pocket_backbone, pocket_captioner, pocket_dataset,
                             pocket_perceptual, random_degradation, random_scene, render, scene_batch, scene_seeds,
                             _load_caption_net)
from ldrps_nb.sampler import POCKET_PRESETS, presets_for, recurrent_sample


@lru_cache(maxsize=None)
def models():
    return pocket_backbone(), pocket_captioner(), pocket_perceptual()


def restore(image: torch.Tensor, preset: str) -> torch.Tensor:
    bb, cap, perc = models()
    return recurrent_sample(image, backbone=bb, preset=preset, captioner=cap, perceptual=perc, progress=False).image


def test_pocket_presets_are_picked_for_the_pocket_backbone():
    assert presets_for(models()[0]) is POCKET_PRESETS
    assert {p.resolution for p in POCKET_PRESETS.values()} == {64}


def test_autoencoder_reconstructs_test_scenes():
    """The shipped autoencoder (decoder fine-tuned in five stages, chapter 09) reconstructs test scenes at 30.8 dB on
    average over 200; its first decoder gave 24.5 dB, the first fine-tune 27.1. Checked on 50 (30.60 dB), and its
    weights come frozen."""
    bb = models()[0]
    x, _ = scene_batch(scene_seeds("test", 50, start=200))
    with torch.no_grad(): rec = bb.decode(bb.encode(x)).clamp(0, 1)
    assert psnr(rec, x).mean().item() > 29.0
    assert not any(p.requires_grad for p in bb.vae.parameters())


def test_denoiser_loss_is_seeded_and_held_out():
    """`denoiser_loss` draws its noise and timesteps from its seed: the same seed, the same numbers. The shipped
    denoiser's held-out loss is 0.0254 on 1024 dev scenes (chapter 09); on 64 of them it stays near that."""
    bb = models()[0]
    a, b, c = denoiser_loss(bb, n=64), denoiser_loss(bb, n=64), denoiser_loss(bb, n=64, seed=1)
    assert a == b and a != c and set(a) == {"all", "t<500", "t>=500"}
    assert 0.01 < a["all"] < 0.06 and a["t<500"] > a["t>=500"]


def test_lowlight_gains_psnr():
    """The low-light preset beats the input by issue #4's 3 dB on average over the first four test scenes (the
    benchmark's 50 scenes: +8.4 dB; single scenes vary from about +2 to +11 dB). Haze and noise meet their targets
    on the 50-scene means by smaller margins, with single scenes far on either side (chapter 09), and take 100
    steps, so they are reported by benchmarks/pocket_quality.py, not asserted on a handful of scenes here."""
    samples = pocket_dataset("lowlight", 4)
    gains = [(psnr(restore(s.degraded, "lowlight"), s.clean) - psnr(s.degraded, s.clean)).item() for s in samples]
    assert sum(gains) / len(gains) > 3.0, [round(g, 2) for g in gains]


def test_restoration_is_deterministic():
    "The same seed gives the same pixels, run after run."
    y = pocket_dataset("noise", 1)[0].degraded
    assert torch.equal(restore(y, "denoise"), restore(y, "denoise"))


def test_captioner_reads_degraded_scenes():
    "Attribute accuracy on 60 degraded test scenes stays where the chapter reports it."
    seeds = scene_seeds("test", 60, start=500)
    imgs = torch.cat([random_degradation(render(random_scene(s))[None], torch.Generator().manual_seed(s)) for s in seeds])
    acc = attribute_accuracy(_load_caption_net(), imgs, [random_scene(s) for s in seeds])
    assert acc["background"] > 0.9 and acc["shape"] > 0.75 and acc["colour1"] > 0.9, acc


def test_grey_benchmark_has_no_classical_rows():
    "No classical method colourises: the grey task's table is the input and LD-RPS (the `colorise` preset) only."
    from ldrps_nb.pocket import pocket_benchmark
    bb, cap, perc = models()
    rows = pocket_benchmark("grey", 1, backbone=bb, captioner=cap, perceptual=perc, recurrences=0, steps=3, progress=False)
    assert [r.method for r in rows] == ["input", "LD-RPS, caption, N=0", "LD-RPS, no caption, N=1"]
    assert all(r.n_scored == 1 for r in rows)


def test_benchmark_rows_never_borrow_another_image_run():
    "When the captioned run fails on an image, its earlier-pass rows fail there too (a note), not take the last image's."
    from ldrps_nb.core import ConfigError
    from ldrps_nb.pocket import pocket_benchmark
    bb, cap, perc = models()
    calls = []
    def flaky(y):  # per image: the captioned run, then the run without a caption; the third call is image 2's first
        calls.append(y)
        if len(calls) == 3: raise ConfigError("captioner unavailable")
        return cap(y)
    rows = {r.method: r for r in pocket_benchmark("grey", 2, backbone=bb, captioner=flaky, perceptual=perc,
                                                  recurrences=1, steps=3, progress=False)}
    for method in ("LD-RPS, caption, N=1", "LD-RPS, caption, N=0"):
        assert rows[method].n_scored == 1 and "failed on grey_" in rows[method].note, rows[method]
