"""Pocket-world quality benchmark (issue #4): PSNR / SSIM of the degraded input, the classical zero-shot baselines and
LD-RPS (with and without caption, after 0..N recurrences) on test-split scenes of each task (grey: no classical
method colourises, so the input is the only reference row).

Prints a Markdown table per task and a summary, and writes one CSV per task (plus the summary) to --out.

    python benchmarks/pocket_quality.py                 # 50 test scenes per task, all tasks
    python benchmarks/pocket_quality.py --n 5 --tasks noise --split dev
"""
import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from ldrps_nb.evaluation import markdown_table, write_csv
from ldrps_nb.pocket import BENCH_TASKS, pocket_backbone, pocket_benchmark, pocket_captioner, pocket_perceptual


def summary(tables: dict) -> str:
    "One line per task: input, best classical baseline, LD-RPS (preset's N, caption) and the caption's effect."
    lines = ["| task | input PSNR | best baseline | LD-RPS PSNR | gain over input | gain over baseline | caption effect |",
             "|---|---|---|---|---|---|---|"]
    for task, rows in tables.items():
        by = {r.method: r.scores["psnr"] for r in rows if r.scores.get("psnr") is not None}
        base = max((r for r in rows if r.method != "input" and not r.method.startswith("LD-RPS") and r.n_scored),
                   key=lambda r: r.scores["psnr"], default=None)  # None: the task has no classical baseline (grey)
        nocap = next(r for r in rows if "no caption" in r.method)
        n = nocap.method.rsplit("=", 1)[1]
        ours = by[f"LD-RPS, caption, N={n}"]
        best, over = ((f"{base.method} {base.scores['psnr']:.2f}", f"{ours - base.scores['psnr']:+.2f} dB") if base
                      else ("none", "n/a"))
        lines.append(f"| {task} | {by['input']:.2f} | {best} | {ours:.2f} (N={n}) | {ours - by['input']:+.2f} dB | "
                     f"{over} | {ours - nocap.scores['psnr']:+.2f} dB |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="scenes per task (default 50)")
    ap.add_argument("--tasks", nargs="+", default=list(BENCH_TASKS), choices=list(BENCH_TASKS))
    ap.add_argument("--split", default="test", choices=["dev", "test"], help="test (default) or dev (for tuning)")
    ap.add_argument("--start", type=int, default=0, help="first scene of the split")
    ap.add_argument("--recurrences", type=int, default=3, help="largest N of the recurrence rows (default 3)")
    ap.add_argument("--out", default="benchmark_results", help="folder of the CSV files (default benchmark_results/)")
    args = ap.parse_args(argv)
    if args.n < 1: ap.error("--n must be >= 1")
    bb, cap, perc = pocket_backbone(), pocket_captioner(), pocket_perceptual()
    out, tables, t0 = Path(args.out), {}, time.time()
    print(f"pocket quality benchmark: {args.n} {args.split} scenes per task, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n")
    for task in args.tasks:
        rows = pocket_benchmark(task, args.n, split=args.split, start=args.start, recurrences=args.recurrences,
                                backbone=bb, captioner=cap, perceptual=perc)
        tables[task] = rows
        print(markdown_table(rows, title=f"{task} ({args.split} split, {args.n} scenes)", notes=[]) + "\n", flush=True)
        write_csv(rows, out / f"pocket_{task}_{args.split}.csv", overwrite=True)  # this script's own table, re-run
    text = summary(tables)
    print(text)
    (out / f"pocket_summary_{args.split}.md").write_text(text + "\n")
    print(f"\nwrote {out}/ in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
