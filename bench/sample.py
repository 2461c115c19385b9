"""Sampling benchmark: our pipeline vs a stock diffusers StableDiffusionPipeline of the same size.

Prints, in one run:
  - seconds for 8 images at 64 px, 20 DPM-Solver++ 2M steps with classifier-free guidance (text encoding,
    denoising and decoding included), for our Pipeline (shipped model; bf16 weights, and fp32 weights under
    bf16 autocast) and for a stock
    `StableDiffusionPipeline` assembled from stock diffusers components of the same size: our AutoencoderKL,
    the same MiniLM text encoder and tokenizer, and a `UNet2DConditionModel` of about our UNet's FLOPs per
    sample (64/128 channels; random weights: only the time is measured), in fp32 and under bf16 autocast;
  - images/s at the best batch size (64 images, batch 8/16/32/64) for both;
  - peak resident memory of this process (sampling only).

    python bench/sample.py [--model DIR] [--device cpu|cuda] [--repeats 5] [--json out.json]
                           [--random-text-encoder DIR]

--random-text-encoder DIR (timing only, for a machine without the 90 MB MiniLM weights, e.g. the GPU machine):
the text encoder is MiniLM's architecture built from DIR's config.json and tokenizer files with random weights;
the images are then meaningless, the time is the same. The output says so.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import time
import warnings

import torch

import minicream


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stock_pipeline(pipe: minicream.Pipeline, device: str):
    """diffusers' StableDiffusionPipeline from stock parts of our size (UNet random: timing only)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=384, attention_head_dim=32, norm_num_groups=32)
    text_model, tokenizer = pipe.text_encoder.model, pipe.text_encoder.tokenizer
    scheduler = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction",
                                            algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=text_model, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    return sd.to(device)


def run_stock(sd, n: int, bf16: bool, device: str, batch: int | None = None):
    batch = batch or n
    ctx = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def go():
        with torch.no_grad(), ctx:
            for start in range(0, n, batch):
                sd("red apple, twemoji", height=64, width=64, num_inference_steps=20, guidance_scale=4.0,
                   num_images_per_prompt=min(batch, n - start), output_type="pil")
    return go


def use_random_text_encoder(folder: str) -> None:
    """Make TextEncoder.load build the encoder of `folder`'s config.json with random weights (timing only)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from minicream.text.encoder import TextEncoder

    def load(cls, path=None, max_length: int = 32, device: str = "cpu"):
        torch.manual_seed(0)
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, "random-init MiniLM (timing only)", "0" * 64, max_length).to(device)

    TextEncoder.load = classmethod(load)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped reference model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--random-text-encoder", metavar="DIR", help="timing only: MiniLM's architecture from DIR, random weights")
    args = ap.parse_args()
    if args.random_text_encoder:
        use_random_text_encoder(args.random_text_encoder)
        print("# text encoder: random-init MiniLM architecture (timing only; the images are meaningless)")
    pipe = minicream.Pipeline.from_pretrained(args.model, device=args.device)  # bf16 weights (the default)
    pipe32 = minicream.Pipeline.from_pretrained(args.model, device=args.device, dtype="fp32")  # fp32 under bf16 autocast
    sd = stock_pipeline(pipe, args.device)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    res: dict = {}

    def ours(p, n, batch):
        return lambda: p("red apple, twemoji", num_images=n, steps=20, guidance=4.0, sampler="dpmpp_2m", seed=0, batch_size=batch)

    # Interleaved rounds (each configuration once per round, best of the rounds): this VM's speed drifts by up to
    # ~2x within minutes, so configurations timed one after the other are not comparable.
    configs = {"ours_8": ("minicream Pipeline, bf16 weights (default)", ours(pipe, 8, 8)),
               "ours_8_fp32_autocast": ("minicream Pipeline, fp32 weights + bf16 autocast", ours(pipe32, 8, 8)),
               "stock_8_fp32": ("diffusers StableDiffusionPipeline fp32", run_stock(sd, 8, False, args.device)),
               "stock_8_bf16": ("diffusers StableDiffusionPipeline bf16 autocast", run_stock(sd, 8, True, args.device))}
    times = {k: [] for k in configs}
    for _, fn in configs.values():
        fn()  # warm-up (oneDNN primitive creation, allocator)
    for _ in range(args.repeats):
        for k, (_, fn) in configs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print(f"8 images, 64 px, 20 DPM-Solver++ 2M steps, guidance 4, decoding included (best and median of {args.repeats} interleaved rounds):")
    for k, (label, _) in configs.items():
        res[k], res[k + "_median"] = min(times[k]), statistics.median(times[k])
        print(f"  {label:48s} {res[k]:6.2f} s  (median {res[k + '_median']:.2f})", flush=True)
    stock_best = min(res["stock_8_fp32"], res["stock_8_bf16"])
    print(f"  ratio stock (best precision) / ours: {stock_best / res['ours_8']:.2f}x; "
          f"bf16 weights / autocast: {res['ours_8_fp32_autocast'] / res['ours_8']:.2f}x")

    print("images/s, 64 images, by batch size (one interleaved run each):")
    res["ours_ips"], res["stock_ips"] = {}, {}
    for b in (8, 16, 32, 64):
        res["ours_ips"][b] = 64 / timed(ours(pipe, 64, b), 1)
        res["stock_ips"][b] = 64 / timed(run_stock(sd, 64, True, args.device, b), 1)
        print(f"  batch {b:3d}: minicream {res['ours_ips'][b]:6.1f}   stock (bf16) {res['stock_ips'][b]:6.1f}", flush=True)
    bo, bs = max(res["ours_ips"].values()), max(res["stock_ips"].values())
    print(f"  best: minicream {bo:.1f} images/s, stock {bs:.1f} images/s, ratio {bo / bs:.2f}x")
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak resident memory of this process (both pipelines loaded): {res['peak_rss_gb']:.2f} GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
