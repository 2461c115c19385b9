"""UNet backbones at equal training time, evaluated by the eval suite: dense vs mixture-of-experts (issue 3's
ablation) and ours vs the stock diffusers UNet (issue 6's quality per CPU-minute).

Trains the reference recipe's UNet once per arm for the same wall-clock minutes, then runs `minicream eval` on
each (concepts, objects and minicream-table) with the shipped evaluator and judge, and prints one table. Arms:
  moe    `unet.model.moe="token"`: the shipped design
  dense  `"none"`: the dense twin, same active parameters per token
  stock  the stock diffusers UNet2DConditionModel (64/128 channels, one layer per block, cross-attention at
         8x8: about our UNet's FLOPs per sample, see bench/train_step.py), trained by the same recipe
  stock_fp32  the same without bf16 autocast: on this CPU the stock UNet trains faster in fp32
  moe_b96  the shipped design at batch 96 (800 steps) instead of 48 (1500): a larger batch at equal time
  moe8     8 experts instead of 4, top-1: twice the expert parameters at the same active FLOPs (issue 13)
  flow     the shipped design trained with the rectified-flow objective (logit-normal levels, SD3) instead of v
  ln_sd3   v with SD3's logit-normal noise levels (logit mean 0, std 1: log-SNR ~ N(0, 2)) instead of uniform t
  ln_noisy v with logit-normal levels shifted to noise (mean 1: log-SNR ~ N(-2, 2); uniform t has median -1.3)
  repa     the shipped design plus REPA (weight 0.5), aligned with the --evaluator's image tower (training/repa.py)
  aug      the shipped design on the images plus one zoomed (0.75-1) and shifted (<= 4 px) copy of each (data.augment=1)
  lr3e4    the shipped design at peak learning rate 3e-4 instead of the preset's (8e-4 in `full`): for warm-started
           sittings, which lose ground to a restart at the full rate
  steps_clock  the learning rate's cosine over --steps alone, as before session 15: a run cut by --minutes stops
           mid-decay (the reference and full presets now follow the clock too: unet.train.schedule_clock = "time")

    python bench/moe_ablation.py --minutes 12 --vae-from runs/ref --out runs/ablation [--arms moe,dense] [--parallel]
    python bench/moe_ablation.py --config full --benchmarks coverage --evaluator minicream/full/evaluator \
        --vae-from runs/full2 --minutes 15 --steps 1000 --arms moe,dense,moe8,flow --parallel --out runs/ablation13

    python bench/moe_ablation.py --config full --benchmarks coverage --evaluator minicream/full/evaluator \
        --init-from full --minutes 25 --steps 1500 --arms moe,ln_noisy --parallel --out runs/ablation13_warm

--vae-from reuses a finished run's autoencoder (stage 3), so both arms train only the UNet on identical latents.
--parallel trains both arms at once, each pinned to its own CPU core with one thread (fair on a 2-core machine:
both get the same hardware at the same time); otherwise they run one after the other with all threads.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ARMS = {
    "moe": ["--moe", "token"],
    "dense": ["--moe", "none"],
    "stock": ["--set", 'unet.model.arch="diffusers"', "--set", "unet.model.channels=[64, 128]",
              "--set", "unet.model.layers_per_block=1", "--set", "unet.model.attention=[false, true]",
              "--set", "unet.model.head_dim=32"],
}
ARMS["stock_fp32"] = ARMS["stock"] + ["--set", 'unet.train.mixed_precision="no"']  # its faster precision on a CPU
# Twice the batch (same learning rate) with about the schedule length that fits the same minutes: does a larger batch,
# which raises samples/s on this CPU, buy quality at equal time? (An arm's own --steps wins over --steps.)
ARMS["moe_b96"] = ARMS["moe"] + ["--set", "unet.train.batch_size=96", "--steps", "800"]
ARMS["moe8"] = ARMS["moe"] + ["--set", "unet.model.num_experts=8"]
ARMS["flow"] = ARMS["moe"] + ["--set", 'unet.objective="flow"']
ARMS["ln_sd3"] = ARMS["moe"] + ["--set", 'unet.timesteps="logit_normal"']
ARMS["ln_noisy"] = ARMS["ln_sd3"] + ["--set", "unet.logit_mean=1.0"]
ARMS["repa"] = ARMS["moe"] + ["--set", "unet.repa_weight=0.5", "--set", "unet.repa_encoder={evaluator}"]
ARMS["aug"] = ARMS["moe"] + ["--set", "data.augment=1"]  # one zoomed/shifted copy of every image (data.augment)
ARMS["lr3e4"] = ARMS["moe"] + ["--set", "unet.train.lr=3e-4"]
ARMS["steps_clock"] = ARMS["moe"] + ["--set", 'unet.train.schedule_clock="steps"']


def prepare(run: Path, vae_from: Path | None) -> None:
    if run.exists() or vae_from is None:
        return
    (run / "stages").mkdir(parents=True)
    shutil.copytree(vae_from / "vae", run / "vae")
    shutil.copy(vae_from / "stages" / "autoencoder.json", run / "stages")


def train_cmd(run: Path, arm: str, args) -> list[str]:
    return [sys.executable, "-m", "minicream.cli", "train", "--config", args.config, "--out", str(run), "--resume",
            "--steps", str(args.steps), *[a.replace("{evaluator}", repr(str(args.evaluator))) for a in ARMS[arm]], "--max-minutes", str(args.minutes), "--seed", str(args.seed),
            "--set", 'evaluator.preset=""',  # no stage 7: every arm is graded by the same shipped evaluator and judge
            *(["--init-from", args.init_from] if args.init_from else [])]


def launch(cmd: list[str], log: Path, core: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    pre = None
    if core is not None:
        env["OMP_NUM_THREADS"] = "1"
        pre = lambda: os.sched_setaffinity(0, {core})  # noqa: E731
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, preexec_fn=pre)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="reference")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--vae-from", help="a finished run directory whose autoencoder both arms reuse")
    ap.add_argument("--init-from", help="warm-start every arm from this exported model (folder or shipped name): "
                                        "compares the arms later in training, where a from-scratch arm is still at the floor")
    ap.add_argument("--minutes", type=float, default=12.0, help="UNet training minutes per arm")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps (the schedule's length; time stops first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", action="store_true", help="train the arms one per core at a time (rounds of as many arms as cores)")
    ap.add_argument("--arms", default="moe,dense", help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--benchmarks", default="objects,concepts,minicream-table",
                    help="objects,concepts,minicream-table (61-concept models) or coverage (the full vocabulary)")
    ap.add_argument("--evaluator", default=str(Path(__file__).resolve().parents[1] / "minicream" / "reference" / "evaluator"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vae_from = Path(args.vae_from) if args.vae_from else None
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        ap.error(f"--arms: choose among {', '.join(ARMS)}")
    cores = sorted(os.sched_getaffinity(0))

    procs = []
    for i, arm in enumerate(arms):
        run = out / arm
        prepare(run, vae_from)
        if args.parallel and i % len(cores) == 0:  # one arm per core at a time: a round ends before the next starts
            [p.wait() for p in procs]
        p = launch(train_cmd(run, arm, args), out / f"{arm}.log", cores[i % len(cores)] if args.parallel else None)
        if not args.parallel:
            p.wait()
        procs.append(p)
    if any(p.wait() for p in procs):
        print(f"a training failed; see {out}/*.log", file=sys.stderr)
        return 1

    rows = {}
    coverage = "coverage" in args.benchmarks.split(",")
    print(HEADER_COVERAGE if coverage else HEADER_61, flush=True)
    for arm in arms:  # graded one arm at a time; rows are printed and saved as they come (a rerun skips finished reports)
        model = out / arm / "model"
        if not (model / "evaluator").exists():
            shutil.copytree(args.evaluator, model / "evaluator")
        steps = [line for line in (out / arm / "train_log.txt").read_text().splitlines() if "5. unet:" in line][-1]
        rows[arm] = {"unet": steps.split("5. unet: ")[1].split(";")[0]}
        for bench in args.benchmarks.split(","):
            extra = ["--samples", "8"] if bench == "objects" else []
            rep = out / arm / f"eval_{bench}"
            if not (rep / "report.json").exists():
                subprocess.run([sys.executable, "-m", "minicream.cli", "eval", "--model", str(model), "--benchmark", bench,
                                "--out", str(rep), *extra], check=True, stdout=subprocess.DEVNULL)
            rows[arm][bench] = json.loads((rep / "report.json").read_text())
        (out / "ablation.json").write_text(json.dumps(rows, indent=1, default=str))
        print(table_row(arm, rows[arm], coverage), flush=True)
    return 0


HEADER_COVERAGE = ("| arm | UNet training | coverage nearest top-1 / top-5 | judge top-1 / top-5 | KID | SSIM plain |\n"
                   "|---|---|---|---|---|---|")
HEADER_61 = ("| arm | UNet training | concepts judge top-1 / top-5 | concepts KID | objects judge top-1 / top-5 | "
             "table judge top-1 | table FD |\n|---|---|---|---|---|---|---|")


def table_row(arm: str, r: dict, coverage: bool) -> str:
    if coverage:
        c = r["coverage"]
        n, j = c["object_accuracy"]["nearest"], c["object_accuracy"]["judge"]
        return (f"| {arm} | {r['unet']} | {n['top1']:.3f} / {n['top5']:.3f} (n {n['n']}) | {j['top1']:.3f} / {j['top5']:.3f} | "
                f"{c['kid_evaluator']['mean']:.4f} ± {c['kid_evaluator']['std']:.4f} | {c['ssim_pairwise_plain']} |")
    c, o, t = r["concepts"], r["objects"], r["minicream-table"]
    ca, oa, ta = c["object_accuracy"]["judge"], o["object_accuracy"]["judge"], t["object_accuracy"]["judge"]
    return (f"| {arm} | {r['unet']} | {ca['top1']:.3f} / {ca['top5']:.3f} (n {ca['n']}) | "
            f"{c['kid_evaluator']['mean']:.4f} ± {c['kid_evaluator']['std']:.4f} | {oa['top1']:.3f} / {oa['top5']:.3f} (n {oa['n']}) | "
            f"{ta['top1']:.3f} | {t['fd_evaluator']:.3f} |")

if __name__ == "__main__":
    sys.exit(main())
