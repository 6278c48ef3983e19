"""Memory benchmark (issue #6): peak tensor memory of LD-RPS with the SD-2.1-base architecture, on any device.

On a GPU, `speed.py` reports `torch.cuda.max_memory_allocated`: the bytes held by tensors at their peak. A CPU has no
such counter (the process's resident set also holds the allocator's caches and the libraries), so this script counts
the same thing on any device: every tensor storage created during a restoration is tracked from the op that creates
it until it is freed (`LiveTensorBytes`, a `TorchDispatchMode`), and the peak is added to the weights already held.
It leaves out what a GPU adds on top (cuDNN workspaces, the CUDA context, the caching allocator's rounding); for the
same dtypes and batching the tensors are the same on every device, so the CPU's count is the GPU's floor.

Rows: SD-2.1-base's UNet, VAE and text encoder built once from their configs (random weights, no download;
`speed.py`'s `sd21_architecture`) at --resolution, a short low-light schedule (--steps, every step guided, one image
unless --images): compat mode (float32, one UNet call per chain); the fast path as users get it (one UNet call,
autocast "auto": fp16 on a GPU, none on a CPU); bfloat16 autocast (on a CPU its cast lists, not CUDA's); half
weights (UNet and text encoder in bfloat16, the VAE stays float32); each again with the VAE decoder's gradient
checkpointing (`Backbone.optimize(vae_checkpointing=True)`). On a GPU the CUDA allocator's own peak is printed next to
the count.

    python benchmarks/memory.py                                   # 512², CPU (about 4 min per row on 2 cores)
    python benchmarks/memory.py --device cuda --rows "fast,fast + VAE checkpointing"
"""
import argparse
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import sd21_architecture  # noqa: E402

from ldrps_nb.backbone import Backbone  # noqa: E402
from ldrps_nb.losses import vgg_perceptual  # noqa: E402
from ldrps_nb.sampler import PRESETS, recurrent_sample  # noqa: E402

GiB = 2**30


class LiveTensorBytes(TorchDispatchMode):
    "Bytes held by the tensor storages created inside the mode: `now` and `peak` (views and in-place ops add none)."

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._refs and self._refs[key]() is storage: return
        size = storage.nbytes()

        def freed(_, key=key, size=size):
            self.now -= size
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)
        self.now += size
        self.peak = max(self.peak, self.now)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:  # a view or an in-place result shares an input's storage: nothing new
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs: self._track(t)
        return out


def held_bytes(*modules: torch.nn.Module) -> int:
    "Bytes of the distinct storages of `modules`' parameters and buffers."
    storages = {}
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


ROWS = {  # name: (weights dtype, preset overrides, VAE decoder gradient checkpointing)
    "compat": ("float32", dict(unet_batch="per_chain", autocast="off"), False),
    "fast": ("float32", dict(unet_batch="joint", autocast="auto"), False),  # "auto": fp16 on a GPU, off on a CPU
    "bf16 autocast": ("float32", dict(unet_batch="joint", autocast="bf16"), False),
    "half weights": ("bfloat16", dict(unet_batch="joint", autocast="off"), False),
}
ROWS |= {f"{k} + VAE checkpointing": (d, o, True) for k, (d, o, _) in ROWS.items()}


def measure(bb: Backbone, row: str, resolution: int, steps: int, images: int) -> dict:
    "Restore `images` random images with `bb` set up as `row` says, under `LiveTensorBytes`."
    dtype, overrides, checkpointing = ROWS[row]
    bb.to(dtype=getattr(torch, dtype))
    if checkpointing: bb.optimize(vae_checkpointing=True)
    else: bb.vae.disable_gradient_checkpointing()
    vgg = vgg_perceptual(None).to(bb.device)
    g = torch.Generator().manual_seed(0)
    ys = [torch.rand((1, 3, resolution, resolution), generator=g) for _ in range(images)]
    preset = PRESETS["lowlight"].replace(steps=steps, recurrences=0, t1=1000, resolution=resolution,
                                         x0_from="current_latent", **overrides)
    weights = held_bytes(bb.unet, bb.vae, bb.text_encoder, vgg)
    cuda = bb.device.type == "cuda"
    if cuda: torch.cuda.reset_peak_memory_stats(bb.device)
    t = time.perf_counter()
    with LiveTensorBytes() as live:
        recurrent_sample(ys if images > 1 else ys[0], "a photo", backbone=bb, preset=preset, perceptual=vgg,
                         progress=False)
    return {"row": row, "weights": weights / GiB, "peak": live.peak / GiB, "total": (weights + live.peak) / GiB,
            "cuda": torch.cuda.max_memory_allocated(bb.device) / GiB if cuda else None, "s": time.perf_counter() - t}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=512, help="working side (default 512)")
    ap.add_argument("--steps", type=int, default=2, help="DDIM steps, all guided (default 2)")
    ap.add_argument("--images", type=int, default=1, help="images per call (default 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",")]
    unknown = [r for r in rows if r not in ROWS]
    if unknown: ap.error(f"unknown row(s) {unknown}; valid: {list(ROWS)}")
    device = torch.device(args.device)
    print(f"memory benchmark: torch {torch.__version__}, SD-2.1-base architecture (random weights) at "
          f"{args.resolution}², {args.images} image(s), {args.steps} guided steps, {device}\n", flush=True)
    out = ["| row | weights (GiB) | peak of the restoration's tensors (GiB) | total (GiB) | "
           "CUDA allocator's peak (GiB) | s |", "|---|---|---|---|---|---|"]
    bb = sd21_architecture(device, torch.float32)
    for row in rows:
        r = measure(bb, row, args.resolution, args.steps, args.images)
        cuda = "" if r["cuda"] is None else f"{r['cuda']:.2f}"
        out.append(f"| {r['row']} | {r['weights']:.2f} | {r['peak']:.2f} | **{r['total']:.2f}** | {cuda} | "
                   f"{r['s']:.0f} |")
        print(out[-1], flush=True)
    print("\n" + "\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
