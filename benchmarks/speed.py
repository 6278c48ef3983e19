"""Speed benchmark (issue #6): seconds per step and per image, steps/s and peak memory of LD-RPS, next to the floor.

Rows:
  (a) the shared fixture case `lowlight_short` (tiny SD-2.1-architecture backbone, 64², 50 + 2×25 steps) on the CPU,
      in compat mode (the reference's batching: one UNet call per chain) and with the fast path's batching (one UNet
      call on both chains × CFG), each checked against the fixture's tolerance;
  (b) the SD-2.1-base architecture built from its configs with random weights (no download) at --resolution on the
      GPU, for the full low-light schedule (450 + 2×225 steps; --steps to shorten) — only with --sd;
  (p) the pocket world (chapter 09): one restoration of a 64² test scene per pocket preset, called by name as users
      call it (all passes, captioning included; the fast path's joint UNet batch) with the shipped models on the
      CPU — issue #4's target is ≤ 20 s — and --images test scenes of the low-light preset restored in one call
      (several images in lockstep), seconds per image;
  (c) the floor of (a), (b) and (p): per step, the work the algorithm cannot skip, each kernel timed alone on the same
      device (UNet forward at batch 4, of which CFG 1, the pocket denoise preset's, needs half; VAE decoder forward on
      both chains + backward on the posterior chain, one F-PAM training step on both chains, F-PAM forward + backward
      on the posterior chain, the perceptual network, the two discriminators' updates).

    python benchmarks/speed.py                       # (a), (p) + their floors, CPU
    python benchmarks/speed.py --sd --device cuda    # also (b) + its floor on the GPU
    python benchmarks/speed.py --sd --device cuda --compile --channels-last --images 4   # (b) with the switches
"""
import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from ldrps_nb.backbone import Backbone, load_backbone, tiny_clip_tokenizer
from ldrps_nb.fpam import FPAMTrainer, OnlineDiscriminator
from ldrps_nb.losses import vgg_perceptual
from ldrps_nb.reference import compare, load_case, replay
from ldrps_nb.sampler import PRESETS, recurrent_sample

SHARED = Path(__file__).resolve().parents[2] / "shared"


def peak_memory(device: torch.device) -> float:
    "Peak memory in GiB: CUDA's max allocated on a GPU, the process's max resident set on the CPU."
    if device.type == "cuda": return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda": torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    "Median seconds of `fn()` over `repeats` runs after `warmup` runs."
    for _ in range(warmup): fn()
    times = []
    for _ in range(repeats):
        sync(device); t = time.perf_counter(); fn(); sync(device); times.append(time.perf_counter() - t)
    return statistics.median(times)


def floor(backbone: Backbone, perceptual, resolution: int, device: torch.device, fpam_width: int = 64) -> dict[str, float]:
    "Seconds per step of each kernel a guided step cannot skip, timed alone."
    lat = resolution // backbone.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    z = torch.randn((4, backbone.unet.config.in_channels, lat, lat), generator=g).to(device, backbone.dtype)
    emb = backbone.encode_prompt("a photo").repeat_interleave(2, dim=0).to(device)
    t = torch.tensor(500, device=device)
    x = torch.rand((2, 3, resolution, resolution), generator=g).to(device)
    y = torch.rand((1, 3, resolution, resolution), generator=g).to(device)
    fpam = FPAMTrainer(perceptual, generator=g, device=device, width=fpam_width)
    d = OnlineDiscriminator(4e-5, generator=g, device=device)

    @torch.no_grad()
    def unet(): backbone.unet(z, t, encoder_hidden_states=emb)
    def vae():
        z0 = z[:2].detach().clone().requires_grad_(False)
        with torch.no_grad(): backbone.decode(z0[1:])
        zp = z0[:1].clone().requires_grad_(True)
        backbone.decode(zp).float().square().mean().backward()
    def fpam_train(): fpam.step(x, y, 500, grad_rows=0)
    def fpam_grad():
        xp = x[:1].clone().requires_grad_(True)
        fpam.net(xp).square().mean().backward()
    def vgg():
        xp = x[:1].clone().requires_grad_(True)
        perceptual(xp, y).backward()
    def discriminators(): d.step(x[:1], x[1:]); d.step(x[:1], x[1:])
    parts = {"UNet fwd ×4": unet, "VAE dec fwd ×2 + bwd ×1": vae, "F-PAM train step ×2": fpam_train,
             "F-PAM fwd+bwd ×1": fpam_grad, "perceptual fwd+bwd": vgg, "D1 + D2 updates": discriminators}
    return {k: timed(f, device) for k, f in parts.items()}


def run_row(name: str, run, steps: int, device: torch.device) -> dict:
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    sync(device); t = time.perf_counter(); note = run(); sync(device)
    s = time.perf_counter() - t
    return {"row": name, "image_s": s, "step_s": s / steps, "steps_per_s": steps / s, "peak_gib": peak_memory(device),
            "note": note}


def sd21_architecture(device: torch.device, dtype: torch.dtype) -> Backbone:
    """Stable Diffusion 2.1-base's UNet, VAE and text encoder built from their configs with random weights.

    The text encoder's embedding has SD 2.1's 49408 rows, so the weights weigh what SD 2.1's do (the tokenizer is
    the tiny one, whose 514 ids index the first rows)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from ldrps_nb.backbone import SD21_SCHEDULER_CONFIG
    tok = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512, scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_attention_heads=16, num_hidden_layers=23, hidden_act="gelu",
                                        projection_dim=512, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    for m in (unet, vae, text): m.eval().requires_grad_(False)
    bb = Backbone(vae=vae, unet=unet, text_encoder=text, tokenizer=tok,
                  scheduler_config=dict(DDIMScheduler(**SD21_SCHEDULER_CONFIG).config), name="sd21-random")
    return bb.to(device, dtype)


def table(rows: list[dict], floors: dict[str, dict[str, float]]) -> str:
    out = ["| row | s / image | s / step | steps / s | peak memory (GiB) | note |", "|---|---|---|---|---|---|"]
    out += [f"| {r['row']} | {r['image_s']:.2f} | {r['step_s'] * 1000:.1f} ms | {r['steps_per_s']:.2f} | "
            f"{r['peak_gib']:.2f} | {r['note']} |" for r in rows]
    for name, parts in floors.items():
        out += ["", f"**floor per guided step, {name}** (each kernel alone, median of 5; unguided steps, t >= t1, skip the guidance kernels)", "", "| kernel | ms |", "|---|---|"]
        out += [f"| {k} | {v * 1000:.1f} |" for k, v in parts.items()]
        out += [f"| **sum (floor)** | **{sum(parts.values()) * 1000:.1f}** |"]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default=str(SHARED / "fidelity" / "cases" / "lowlight_short"), help="fixture case folder")
    ap.add_argument("--device", default="cpu", help="device of (b) and its floor (default cpu)")
    ap.add_argument("--no-pocket", action="store_true", help="skip (p), the pocket-world rows")
    ap.add_argument("--sd", action="store_true", help="also (b): the SD-2.1-base architecture, random weights")
    ap.add_argument("--resolution", type=int, default=512, help="(b)'s working side (default 512)")
    ap.add_argument("--steps", type=int, default=450, help="(b)'s DDIM steps of pass 0 (default 450: the full schedule)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="(b)'s weights")
    ap.add_argument("--autocast", default="auto", choices=["off", "auto", "bf16", "fp16"], help="(b)'s autocast (default auto: fp16 on a GPU)")
    ap.add_argument("--compile", action="store_true", help="(b): torch.compile the UNet and VAE decoder (Backbone.optimize)")
    ap.add_argument("--channels-last", action="store_true", help="(b): channels-last UNet and VAE (Backbone.optimize)")
    ap.add_argument("--images", type=int, default=2, help="images per call: (p)'s batched row and (b) (default 2)")
    args = ap.parse_args(argv)
    case, rows, floors = Path(args.case), [], {}
    cpu = torch.device("cpu")
    print(f"speed benchmark: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{platform.processor() or platform.machine()}" +
          (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU") + "\n", flush=True)
    if case.is_dir():
        files = load_case(case)["files"]
        tiny = load_backbone(str(case / files["pipeline"]), device="cpu", dtype=torch.float32)
        steps = 50 + 2 * 25
        for name, overrides in [("(a) tiny CPU, compat", {}), ("(a) tiny CPU, fast batching", {"unet_batch": "joint"})]:
            def run(overrides=overrides):
                rep = replay(case, backbone=tiny, return_records=True, **overrides)
                rep.backbone = tiny
                return "within fixture tolerance" if compare(case, rep)["ok"] else "OUTSIDE fixture tolerance"
            rows.append(run_row(name, run, steps, cpu))
            print(rows[-1], flush=True)
        floors["(a) tiny CPU 64²"] = floor(tiny, vgg_perceptual(case / files["vgg_features"]), 64, cpu)
    else:
        print(f"(a) skipped: fixture case {case} not found")
    if not args.no_pocket:
        from ldrps_nb.pocket import BENCH_TASKS, pocket_backbone, pocket_captioner, pocket_dataset, pocket_perceptual
        from ldrps_nb.sampler import POCKET_PRESETS
        bb, cap, perc = pocket_backbone(), pocket_captioner(), pocket_perceptual()
        for task, (name, _) in BENCH_TASKS.items():
            preset = POCKET_PRESETS[name]
            y = pocket_dataset(task, 1)[0].degraded
            steps = preset.steps + preset.recurrences * int(preset.steps * preset.strength)
            def run(name=name, y=y):  # by name, as users call it: the preset with `OUR_DEFAULTS` (joint UNet batch)
                r = recurrent_sample(y, backbone=bb, preset=name, captioner=cap, perceptual=perc, progress=False)
                return f"captioning {r.timings['setup']:.2f} s of it"
            rows.append(run_row(f"(p) pocket {name}, {steps} steps, CPU", run, steps, cpu))
            print(rows[-1], flush=True)
        preset = POCKET_PRESETS["lowlight"]
        ys = [s.degraded for s in pocket_dataset("lowlight", args.images)]
        steps = preset.steps + preset.recurrences * int(preset.steps * preset.strength)
        for name, batched in [("one by one", False), ("in one call", True)]:
            def run(batched=batched):
                kw = dict(backbone=bb, preset="lowlight", captioner=cap, perceptual=perc, progress=False)
                if batched: recurrent_sample(ys, **kw)
                else: [recurrent_sample(y, **kw) for y in ys]
                return f"{args.images} images, {name}; s / image"
            row = run_row(f"(p) pocket lowlight ×{args.images}, {name}, CPU", run, steps * args.images, cpu)
            rows.append(row | {"image_s": row["image_s"] / args.images})
            print(rows[-1], flush=True)
        floors["(p) pocket 64² CPU"] = floor(bb, perc, 64, cpu, preset.fpam_width)
    if args.sd:
        device = torch.device(args.device)
        bb = sd21_architecture(device, getattr(torch, args.dtype)).optimize(channels_last=args.channels_last,
                                                                            compile=args.compile)
        vgg = vgg_perceptual(None).to(device)
        g = torch.Generator().manual_seed(0)
        ys = [torch.rand((1, 3, args.resolution, args.resolution), generator=g) for _ in range(args.images)]
        preset = PRESETS["lowlight"].replace(steps=args.steps, resolution=args.resolution, unet_batch="joint",
                                             x0_from="current_latent", autocast=args.autocast)
        total = args.steps + 2 * (args.steps // 2)
        if args.compile:  # compile outside the timed rows: a short call at the same shapes
            recurrent_sample(ys[0], "a photo", backbone=bb, preset=preset.replace(steps=4, recurrences=0), perceptual=vgg)
        for images in sorted({1, args.images}):
            def run(images=images):
                recurrent_sample(ys[:images] if images > 1 else ys[0], "a photo", backbone=bb, preset=preset,
                                 perceptual=vgg, progress=True)
                return (f"{args.dtype} weights, autocast {args.autocast}, compile {args.compile}, channels-last "
                        f"{args.channels_last}, random weights; {images} image(s) per call, s / image")
            row = run_row(f"(b) SD-2.1 arch {args.resolution}² {args.device} ×{images}", run, total * images, device)
            rows.append(row | {"image_s": row["image_s"] / images})
            print(rows[-1], flush=True)
        floors[f"(b) SD-2.1 arch {args.resolution}² {args.device}"] = floor(bb, vgg, args.resolution, device)
    print()
    print(table(rows, floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
