"""Sampling latency: our pipeline vs diffusers' text-to-image denoising loop over the same UNet, in one process.

    python benchmarks/sampling.py                       # unet-small (random weights), 64 px, 4 images, 20 DPM++ steps, guidance 3
    python benchmarks/sampling.py --steps-table --model runs/001-small64/export --images 8 --repeats 1

Comparison mode (default), writes benchmarks/results/sampling.json. --model is a registry name (built with random
weights, seed --seed, and exported to a temporary directory) or an exported model directory; either is loaded with
FashionGenPipeline.from_pretrained. With the captions encoded beforehand (outside every timed region):

* ours: what `pipe(...)` runs after encoding its prompts: `pipe._generate` (per-image seeded noise, a fresh
  make_sampler scheduler, fashiongen.diffusion.sample with classifier-free guidance, clamp, .float().cpu()).
* diffusers: the denoising loop of diffusers' StableDiffusionPipeline.__call__ with output_type="latent" (no VAE),
  written out below in `diffusers_loop`, calling the inner UNet2DConditionModel (`model.unet`) of the same loaded
  model, with a scheduler made by the same make_sampler call, the same encodings and the same per-image seeds.
* end to end: `pipe(prompts, ...)`, i.e. ours plus encoding prompts and negative prompts (no embedding cache) and the
  conversion to PIL images.

Each is run once untimed, then --repeats timed runs in alternating order (ours, diffusers, end to end; then the
reverse). Reported: median seconds per batch, images/s, diffusers/ours (seconds; > 1 means ours is faster), and the
largest absolute difference between our images and the loop's (floats in [-1, 1]).

--steps-table times our pipeline for DDPM 250 / DDIM 50 / DPM++ 10, 15, 20 (or --table) and records seconds per image
and, as a convergence proxy (not a quality metric), the mean absolute pixel difference (0-255) of each configuration's
images from the first configuration's (DDPM 250) and from DPM++ 20's, same seeds and prompts. Writes
benchmarks/results/sampling_steps.json. The FID column stays empty until the evaluation code exists.

--paths times each inference path of the shipped model (paths_table: fp32 eager, channels_last, onnxruntime, auto;
fashiongen.models.runtime) for --images images x --steps guided steps, after one warm-up request, and reports FLOPs per
image per forward and per request (torch.utils.flop_counter; the request's UNet rows counted on the stage's denoiser),
the machine's measured fp32 and bf16 peaks (4096^2 matmul, 128-channel 3x3 conv), each path's GFLOPS and fraction of its
dtype's matmul peak, and the 8-bit max/mean difference of its images from the first path's. Writes
benchmarks/results/sampling_paths.json. time_path(name, make_pipeline, settings) times one more path (a student).

A table goes to stdout, then one JSON line (also --out).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing the package

from benchmarks.common import machine, synchronize  # noqa: E402
from fashiongen.config import TextConfig, load_config  # noqa: E402
from fashiongen.data.transforms import to_uint8  # noqa: E402
from fashiongen.diffusion import SAMPLERS, make_sampler  # noqa: E402
from fashiongen.settings import DEFAULT_SAMPLER  # noqa: E402
from fashiongen.models import MODELS, FashionUNet, build_model, count_parameters  # noqa: E402
from fashiongen.generators import GenerationInputs  # noqa: E402
from fashiongen.pipeline import FashionGenPipeline, SamplingSettings  # noqa: E402
from fashiongen.text import CaptionEncoder, TextEncoding  # noqa: E402
from fashiongen.train import export_model  # noqa: E402

PROMPTS = [
    "a black leather biker jacket with silver zips",
    "a red floral midi dress with short sleeves",
    "white low-top canvas sneakers",
    "a navy blue slim fit cotton shirt",
]
STEPS_TABLE = "ddpm:250,ddim:50,dpm++:10,dpm++:15,dpm++:20"
DIFFUSERS_FILE = "diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion.py"


def load_pipeline(model: str, resolution: int | None, device: str, dtype: str, scratch: Path,
                  seed: int) -> tuple[FashionGenPipeline, dict[str, Any]]:
    """A registry name -> random weights, exported, loaded; a path -> that export. Base models only."""
    if model in MODELS:
        resolution = resolution or MODELS[model].native_resolution
        config = load_config([], [f"model.name={model}", f"data.resolution={resolution}", "name=sampling-benchmark"])
        encoder = CaptionEncoder(TextConfig(encoder=config.text.encoder, max_length=config.text.max_length, cache_dir=""))
        torch.manual_seed(seed)
        unet = build_model(config.model, resolution, encoder.dim, {})
        path = export_model(unet, config, encoder.identity, scratch / "model", training={"steps": 0, "images_seen": 0})
        del unet, encoder
        source = {"model": model, "random_weights": True, "weights_seed": seed}
    else:
        path = Path(model)
        source = {"model": str(path), "random_weights": False}
    pipe = FashionGenPipeline.from_pretrained(path, device=device, dtype=dtype)  # caption encoder without cache
    stage = pipe.stages[0]
    if len(pipe.stages) > 1:
        raise SystemExit(f"--model {model}: a cascade with super-resolution stages; give the base model's export")
    if resolution is not None and resolution != stage.resolution:
        raise SystemExit(f"--resolution {resolution}: the model at {model} generates {stage.resolution} px")
    pipe.show_progress = False
    source.update(resolution=stage.resolution, params=count_parameters(stage.model),
                  diffusion=stage.info.section("diffusion"), attributes=list(stage.model.attribute_vocab))
    return pipe, source


def ours(pipe: FashionGenPipeline, text: TextEncoding, unconditional: TextEncoding, seeds: list[int],
         settings: SamplingSettings) -> Tensor:
    """What pipe(prompts, ...) runs once its prompts are encoded (before PIL conversion): [N, 3, R, R] in [-1, 1]."""
    inputs = GenerationInputs(text, unconditional, seeds, [{} for _ in seeds])
    return pipe._generate(inputs, settings, None)


def padded(text: TextEncoding, length: int) -> TextEncoding:
    extra = length - text.token_states.shape[1]
    return TextEncoding(F.pad(text.token_states, (0, 0, 0, extra)), F.pad(text.mask, (0, extra)), text.pooled)


@torch.no_grad()
def diffusers_loop(model: FashionUNet, scheduler: SchedulerMixin, text: TextEncoding, unconditional: TextEncoding,
                   seeds: list[int], num_inference_steps: int, guidance_scale: float) -> Tensor:
    """StableDiffusionPipeline.__call__ steps 3-7 with output_type="latent" (pixels are the latents here), over our
    UNet's inner UNet2DConditionModel. Two inputs the Stable Diffusion loop does not pass and our UNet is trained
    with: encoder_attention_mask (caption padding) and class_labels (pooled caption projection, plus the 'none' row
    of any attribute tables), computed once before the loop by the model's own ConditionEmbedding."""
    unet = model.unet
    device, dtype = unet.device, unet.dtype
    batch = len(seeds)
    do_classifier_free_guidance = guidance_scale > 1 and unet.config.time_cond_proj_dim is None

    # 3. Encode input prompt (done beforehand) and concatenate [negative, positive] into one batch
    length = max(text.token_states.shape[1], unconditional.token_states.shape[1])
    text, unconditional = padded(text.to(device), length), padded(unconditional.to(device), length)
    prompt_embeds, mask, pooled = text.token_states.to(dtype), text.mask, text.pooled
    if do_classifier_free_guidance:
        prompt_embeds = torch.cat([unconditional.token_states.to(dtype), prompt_embeds])  # [2B, L, D]
        mask = torch.cat([unconditional.mask, mask])  # [2B, L]
        pooled = torch.cat([unconditional.pooled, pooled])  # [2B, D]
    attribute_ids = None
    if model.attribute_vocab:
        attribute_ids = torch.zeros(pooled.shape[0], len(model.attribute_vocab), dtype=torch.long, device=device)
    class_labels = model.condition(pooled.to(dtype), attribute_ids)  # [2B, time_dim]

    # 4. Prepare timesteps (retrieve_timesteps)
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps

    # 5. Prepare latent variables (prepare_latents): one CPU generator per image, drawn in float32 so the noise
    # equals ours in every dtype, then cast to the prompt embeddings' dtype like the pipeline's latents
    generator = [torch.Generator().manual_seed(seed) for seed in seeds]
    shape = (batch, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32).to(prompt_embeds.dtype)
    latents = latents * scheduler.init_noise_sigma

    # 6. Prepare extra step kwargs (prepare_extra_step_kwargs, eta=0.0)
    parameters = set(inspect.signature(scheduler.step).parameters)
    extra_step_kwargs: dict[str, Any] = {}
    if "eta" in parameters:
        extra_step_kwargs["eta"] = 0.0
    if "generator" in parameters:
        extra_step_kwargs["generator"] = generator

    # 7. Denoising loop
    for t in timesteps:
        latent_model_input = torch.cat([latents] * 2) if do_classifier_free_guidance else latents
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        noise_pred = unet(latent_model_input, t, encoder_hidden_states=prompt_embeds, timestep_cond=None,
                          cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=False,
                          encoder_attention_mask=mask, class_labels=class_labels)[0]
        if do_classifier_free_guidance:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

    # output_type="latent" returns the latents; image_processor.postprocess would clamp them to the image range
    return latents.float().clamp(-1.0, 1.0).cpu()


def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    began = time.perf_counter()
    output = run()
    synchronize(device)
    return time.perf_counter() - began, output


def measure(runs: dict[str, Callable[[], Any]], repeats: int, device: torch.device,
            desc: str) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One untimed run of each, then `repeats` rounds of all, the order reversed every other round."""
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    with tqdm(total=len(names) * (repeats + 1), desc=desc, unit="run", leave=False, dynamic_ncols=True) as bar:
        for name in names:
            bar.set_postfix_str(f"warm-up {name}")
            _, outputs[name] = timed(runs[name], device)
            bar.update(1)
        for index in range(repeats):
            for name in names if index % 2 == 0 else names[::-1]:
                bar.set_postfix_str(name)
                took, _ = timed(runs[name], device)
                seconds[name].append(took)
                bar.update(1)
    return seconds, outputs


def figures(seconds: list[float], images: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {"median_s": round(median, 4), "images_per_s": round(images / median, 3),
            "seconds": [round(s, 4) for s in seconds]}


def pipeline_inputs(pipe: FashionGenPipeline, images: int, seed: int,
                    captions: list[str] | None = None) -> tuple[list[str], list[int], TextEncoding, TextEncoding]:
    pipe.batch_size = images  # one batch, like the diffusers loop (the default is 8 on CPU, 32 on CUDA)
    prompts = captions[:images] if captions else [PROMPTS[i % len(PROMPTS)] for i in range(images)]
    seeds = pipe.seeds_for(images, seed)  # image i gets seed + i, as pipe(..., seed=seed) does
    text = pipe.encode_prompts(prompts)
    unconditional = pipe.encode_prompts([""] * images, "negative prompt", allow_empty=True)
    return prompts, seeds, text, unconditional


def compare(args: argparse.Namespace, pipe: FashionGenPipeline, source: dict[str, Any], device: torch.device) -> dict[str, Any]:
    prompts, seeds, text, unconditional = pipeline_inputs(pipe, args.images, args.seed)
    settings = SamplingSettings(args.steps, args.guidance, args.scheduler)
    model = pipe.stages[0].model
    scheduler = make_sampler(args.scheduler, pipe.stages[0].info.section("diffusion"))  # held by the "pipeline", reused
    runs = {
        "ours": lambda: ours(pipe, text, unconditional, seeds, settings),
        "diffusers": lambda: diffusers_loop(model, scheduler, text, unconditional, seeds, args.steps, args.guidance),
        "end_to_end": lambda: pipe(prompts, num_images_per_prompt=1, num_inference_steps=args.steps,
                                   guidance_scale=args.guidance, seed=args.seed, scheduler=args.scheduler),
    }
    seconds, outputs = measure(runs, args.repeats, device, f"{source['model']} {args.images} images x {args.steps} steps")
    ours_images, loop_images = outputs["ours"], outputs["diffusers"]
    pil = np.stack([np.asarray(image) for image in outputs["end_to_end"]])
    result = {name: figures(values, args.images) for name, values in seconds.items()}
    return {
        **result,
        "diffusers_over_ours": round(result["diffusers"]["median_s"] / result["ours"]["median_s"], 3),
        "end_to_end_over_ours": round(result["end_to_end"]["median_s"] / result["ours"]["median_s"], 3),
        "max_abs_diff_ours_vs_diffusers": float((ours_images - loop_images).abs().max()),
        "mean_abs_diff_ours_vs_diffusers": float((ours_images - loop_images).abs().mean()),
        "max_abs_diff_uint8_end_to_end_vs_ours": int(np.abs(pil.astype(np.int16) - to_uint8(ours_images).astype(np.int16)).max()),
        "prompts": prompts, "seeds": seeds,
    }


def parse_table(text: str) -> list[tuple[str, int]]:
    configs = []
    for item in text.split(","):
        name, _, steps = item.strip().rpartition(":")
        if name not in SAMPLERS or not steps.isdigit():
            raise SystemExit(f"--table: expected sampler:steps items with samplers from {', '.join(SAMPLERS)}, got {item!r}")
        configs.append((name, int(steps)))
    return configs


def fid_of(images: Tensor, reference: Any, inception: Any) -> dict[str, float]:
    """FID and KID of one configuration's images against the cached real validation statistics."""
    from fashiongen.evaluation.fid import FeatureStats, fid_and_kid
    from fashiongen.evaluation.inception import extract_features

    fake = FeatureStats.from_features(extract_features(list(to_uint8(images)), inception=inception, show_progress=False))
    result = fid_and_kid(reference, fake)
    return {"fid": round(result["fid"], 3), "kid": round(result["kid_mean"], 5), "kid_std": round(result["kid_std"], 5)}


def steps_table(args: argparse.Namespace, pipe: FashionGenPipeline, device: torch.device) -> dict[str, Any]:
    captions, reference, inception = None, None, None
    if args.fid_reference:  # a fixed set: the first --images validation captions, scored against the real validation photos
        from fashiongen.evaluation.fid import reference_stats
        from fashiongen.evaluation.inception import load_inception
        from fashiongen.submission import read_caption_list

        mode = pipe.stages[0].info.data.caption_mode
        every = [item.caption for item in read_caption_list(args.fid_reference, "validation", mode)]
        captions = every[:: max(1, len(every) // args.images)][: args.images]  # spread over the split, not its first rows
        inception = load_inception()
        reference = reference_stats(args.fid_reference, "validation", pipe.resolution, inception=inception,
                                    cache_dir=".cache/fashiongen/eval/fid")
    prompts, seeds, text, unconditional = pipeline_inputs(pipe, args.images, args.seed, captions)
    configs = parse_table(args.table)
    if len(set(configs)) != len(configs):
        raise SystemExit(f"--table: a configuration is listed twice: {args.table}")
    runs = {f"{name} {steps}": (lambda n=name, s=steps: ours(pipe, text, unconditional, seeds, SamplingSettings(s, args.guidance, n)))
            for name, steps in configs}
    for name in dict.fromkeys(name for name, _ in configs):  # warm-up: 2 untimed steps of each sampler
        ours(pipe, text, unconditional, seeds, SamplingSettings(2, args.guidance, name))
    seconds: dict[str, list[float]] = {}
    pixels: dict[str, np.ndarray] = {}
    quality: dict[str, dict[str, float]] = {}
    for label, run in tqdm(runs.items(), desc="steps table", unit="config", leave=False, dynamic_ncols=True):
        seconds[label] = []
        for _ in range(args.repeats):
            took, images = timed(run, device)
            seconds[label].append(took)
        pixels[label] = to_uint8(images).astype(np.float32)  # the same every repeat: per-image seeded
        if reference is not None:
            quality[label] = fid_of(images, reference, inception)
    reference = next(iter(runs))
    second_reference = "dpm++ 20" if "dpm++ 20" in runs else None
    rows = []
    for (name, steps), label in zip(configs, runs):
        median = statistics.median(seconds[label])
        rows.append({
            "sampler": name, "steps": steps, "seconds_per_image": round(median / args.images, 4),
            "seconds": [round(s, 4) for s in seconds[label]],
            f"mean_abs_diff_vs_{reference.replace(' ', '')}": round(float(np.abs(pixels[label] - pixels[reference]).mean()), 3),
            **({f"mean_abs_diff_vs_{second_reference.replace(' ', '')}":
                round(float(np.abs(pixels[label] - pixels[second_reference]).mean()), 3)} if second_reference else {}),
            **(quality.get(label) or {"fid": None}),  # FID needs --fid-reference
        })
    return {"reference": reference, "second_reference": second_reference, "prompts": prompts, "seeds": seeds, "rows": rows}

# ---------------------------------------------------------------- --paths: fast inference paths and peaks


def peak_gflops(dtype: torch.dtype, repeats: int = 2, size: int = 4096, batch: int = 4, pixels: int = 64) -> dict[str, Any]:
    """This machine's measured throughput in `dtype`: a size^2 matmul and a 128-channel 3x3 conv on [batch, 128, pixels,
    pixels] (NCHW and NHWC), the best of `repeats` after one warm-up. A dtype without fast kernels is measured smaller
    (bf16 without oneDNN support runs ~1 GFLOPS: a 4096^2 matmul would take minutes)."""
    def best(run: Callable[[], Any], flops: float) -> float:
        run()
        return max(flops / timed(run, torch.device("cpu"))[0] for _ in range(repeats)) / 1e9

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    image, weight = torch.randn(batch, 128, pixels, pixels, dtype=dtype), torch.randn(128, 128, 3, 3, dtype=dtype)
    conv_flops = 2 * batch * 128 * 128 * 9 * pixels * pixels
    with torch.no_grad():
        return {"matmul_size": size, "conv_input": [batch, 128, pixels, pixels], "matmul": round(best(lambda: a @ b, 2 * size**3), 1),
                "conv128_3x3": round(best(lambda: F.conv2d(image, weight, padding=1), conv_flops), 1),
                "conv128_3x3_channels_last": round(best(lambda: F.conv2d(image.contiguous(memory_format=torch.channels_last),
                                                                          weight.contiguous(memory_format=torch.channels_last),
                                                                          padding=1), conv_flops), 1)}


def flops_per_row(pipe: FashionGenPipeline, text: TextEncoding) -> int:
    """FLOPs of one image through the base UNet once (torch.utils.flop_counter), at the benchmark's caption length."""
    from torch.utils.flop_counter import FlopCounterMode

    from fashiongen.generators import attribute_ids

    stage = pipe.stages[0]
    size = stage.resolution
    ids = attribute_ids(stage.attribute_vocab, [{}], torch.device("cpu"))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        stage.model(torch.zeros(1, 3, size, size), torch.tensor([500]), text.token_states[:1], text.mask[:1],
                    text.pooled[:1], ids, None)
    return counter.get_total_flops()


class RowCounter:
    """Counts the image rows a stage's denoiser is called with (2 per image per guided step)."""

    def __init__(self, stage: Any) -> None:
        self.stage, self.inner, self.rows = stage, stage.denoiser, 0
        stage.denoiser = self

    def __call__(self, sample: Tensor, *rest: Any) -> Tensor:
        self.rows += sample.shape[0]
        return self.inner(sample, *rest)

    def remove(self) -> int:
        self.stage.denoiser = self.inner
        return self.rows


def time_path(name: str, make_pipeline: Callable[[], FashionGenPipeline], settings: SamplingSettings, *, images: int = 4,
              repeats: int = 0, seed: int = 0, forwards_per_image: int | None = None) -> dict[str, Any]:
    """One inference path: load it (timed apart), one warm-up request, `repeats` timed requests of `images` images.
    Returns seconds, the images (uint8), the UNet rows one request forwards (counted on the stage's denoiser, or
    `forwards_per_image` x images for a path that does not call it) and `run`, one more timed request (run_paths
    alternates the paths' requests round by round: on a shared machine the speed drifts by tens of percent)."""
    began = time.perf_counter()
    pipe = make_pipeline()
    load_s = time.perf_counter() - began
    pipe.show_progress = False
    _, seeds, text, unconditional = pipeline_inputs(pipe, images, seed)
    counter = RowCounter(pipe.stages[0]) if hasattr(pipe.stages[0], "denoiser") else None
    pixels = to_uint8(ours(pipe, text, unconditional, seeds, settings))
    rows = counter.remove() if counter is not None else 0
    rows = forwards_per_image * images if forwards_per_image is not None else rows
    seconds = [timed(lambda: ours(pipe, text, unconditional, seeds, settings), torch.device("cpu"))[0] for _ in range(repeats)]
    return {"name": name, "runtime": pipe.runtime, "load_s": round(load_s, 2),
            "median_s": round(statistics.median(seconds), 3) if seconds else None,
            "seconds": [round(s, 3) for s in seconds], "rows_per_request": rows, "settings": settings.to_dict(),
            "pixels": pixels, "text": text, "pipeline": pipe,
            "run": lambda: timed(lambda: ours(pipe, text, unconditional, seeds, settings), torch.device("cpu"))[0]}


def shipped_path(runtime: str, dtype: str = "float32") -> Callable[[], FashionGenPipeline]:
    from fashiongen.pipeline import default_model_path

    return lambda: FashionGenPipeline.from_pretrained(default_model_path(), runtime=runtime, dtype=dtype).base_only()


def student_path(runtime: str, dtype: str = "float32") -> Callable[[], FashionGenPipeline]:
    """The default folder's few-step student (its base model "student") at 64 px."""
    from fashiongen.pipeline import default_model_path

    return lambda: FashionGenPipeline.from_pretrained(default_model_path(), base="student", runtime=runtime,
                                                      dtype=dtype).base_only()


def paths_table(args: argparse.Namespace) -> list[tuple[str, Callable[[], FashionGenPipeline], SamplingSettings]]:
    """(name, make_pipeline, settings) per path; the first is the reference the others are compared with (for a
    student the 8-bit difference from it is a distance from the teacher's images, not a tolerance)."""
    teacher = SamplingSettings(args.steps, args.guidance, args.scheduler)
    paths = [
        ("fp32 eager", shipped_path("eager"), teacher),
        ("fp32 channels_last", shipped_path("channels_last"), teacher),
        ("fp32 onnxruntime", shipped_path("onnxruntime"), teacher),
        ("auto", shipped_path("auto", "auto"), teacher),
    ]
    if args.student:
        for steps in (1, 2, 4, 8):
            paths.append((f"student {steps} step{'s' if steps > 1 else ''}", student_path("eager"),
                          SamplingSettings(steps, args.guidance, "lcm")))
        for steps in (1, 2, 4, 8):
            paths.append((f"student {steps} auto", student_path("auto", "auto"), SamplingSettings(steps, args.guidance, "lcm")))
    return paths


def end_to_end(row: dict[str, Any], repeats: int) -> None:
    """Seconds for the whole call a user makes, pipe(prompts, ...): prompt encoding and PIL images included."""
    pipe, settings = row["pipeline"], SamplingSettings(**row["settings"])
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(row["pixels"]))]
    call = (lambda: pipe(prompts, seed=0, num_inference_steps=settings.num_inference_steps,
                         guidance_scale=settings.guidance_scale, scheduler=settings.scheduler))
    call()
    row["end_to_end_s"] = round(statistics.median(timed(call, torch.device("cpu"))[0] for _ in range(max(1, repeats))), 3)


def run_paths(args: argparse.Namespace) -> dict[str, Any]:
    from fashiongen.models.runtime import cpu_support

    support = cpu_support()
    peaks = {"float32": peak_gflops(torch.float32),
             "bfloat16": peak_gflops(torch.bfloat16) if support.bf16 else peak_gflops(torch.bfloat16, 1, 1024, 1, 32)}
    rows, reference, per_row = [], None, None
    prepared = [time_path(name, make_pipeline, settings, images=args.images, seed=args.seed)
                for name, make_pipeline, settings in tqdm(paths_table(args), desc="loading and warm-up", unit="path", leave=False)]
    for index in tqdm(range(args.repeats), desc="timed rounds", unit="round", leave=False):
        for row in prepared if index % 2 == 0 else prepared[::-1]:
            row["seconds"].append(round(row["run"](), 3))
    for row in prepared:
        row["median_s"], row["min_s"] = round(statistics.median(row["seconds"]), 3), min(row["seconds"])
        row.pop("run")
        end_to_end(row, args.repeats)
        pixels, text, pipe = row.pop("pixels").astype(np.int16), row.pop("text"), row.pop("pipeline")
        if per_row is None:  # the first path's network (every shipped path runs the same UNet)
            per_row = flops_per_row(pipe, text)
        del pipe
        reference = pixels if reference is None else reference
        dtype = row["runtime"].split()[-1]
        flops = per_row * row["rows_per_request"]
        row.update(gflop_per_request=round(flops / 1e9, 1), gflops=round(flops / row["median_s"] / 1e9, 1),
                   fraction_of_peak=round(flops / row["median_s"] / 1e9 / peaks.get(dtype, peaks["float32"])["matmul"], 3),
                   max_abs_diff_uint8=int(np.abs(pixels - reference).max()),
                   mean_abs_diff_uint8=round(float(np.abs(pixels - reference).mean()), 4))
        rows.append(row)
    base = rows[0]["median_s"]
    for row in rows:  # the median of per-round ratios too: the paths of one round ran back to back
        row["speedup_vs_first"] = round(base / row["median_s"], 3)
        row["speedup_vs_first_per_round"] = round(statistics.median(a / b for a, b in zip(rows[0]["seconds"], row["seconds"])), 3)
    return {"cpu_support": {"capability": support.capability, "mkldnn_bf16": support.bf16, "mkldnn_fp16": support.fp16,
                            "flags": list(support.flags)},
            "peaks_gflops": peaks, "gflop_per_image_per_forward": round((per_row or 0) / 1e9, 3),
            "fraction_of_peak_is_of": "the path's dtype's matmul peak", "paths": rows}


def print_paths(result: dict[str, Any]) -> None:
    print(f"peaks (GFLOPS): {json.dumps(result['peaks_gflops'])}; {result['gflop_per_image_per_forward']} GFLOP per image "
          "per forward")
    print(f"{'path':<22}{'runtime':<24}{'s/request':>10}{'end to end':>11}{'speedup':>9}{'GFLOP':>8}{'GFLOPS':>8}"
          f"{'of peak':>8}{'max/mean |diff|':>17}")
    for r in result["paths"]:
        print(f"{r['name']:<22}{r['runtime']:<24}{r['median_s']:>10.3f}{r['end_to_end_s']:>11.3f}{r['speedup_vs_first']:>9.3f}"
              f"{r['gflop_per_request']:>8.0f}{r['gflops']:>8.1f}{r['fraction_of_peak']:>8.2f}"
              f"{r['max_abs_diff_uint8']:>10d} / {r['mean_abs_diff_uint8']:.4f}")


def print_comparison(result: dict[str, Any]) -> None:
    print(f"{'':<12}{'median s/batch':>16}{'images/s':>10}")
    for name in ("ours", "diffusers", "end_to_end"):
        print(f"{name:<12}{result[name]['median_s']:>16.3f}{result[name]['images_per_s']:>10.2f}")
    print(f"diffusers / ours: {result['diffusers_over_ours']:.3f}x   end to end / ours: {result['end_to_end_over_ours']:.3f}x   "
          f"max |ours - diffusers|: {result['max_abs_diff_ours_vs_diffusers']:.2e}")


def print_table(result: dict[str, Any]) -> None:
    keys = [k for k in result["rows"][0] if k.startswith("mean_abs_diff_vs_")]
    header = ["sampler", "steps", "s/image", *[k.replace("mean_abs_diff_vs_", "|diff| vs ") for k in keys], "FID"]
    rows = [[r["sampler"], str(r["steps"]), f"{r['seconds_per_image']:.3f}", *[f"{r[k]:.2f}" for k in keys],
             "-" if r["fid"] is None else f"{r['fid']:.2f}"]
            for r in result["rows"]]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print("|diff|: mean absolute pixel difference (0-255) from that configuration's images, same seeds and prompts: "
          "a convergence proxy, not a quality metric")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet-small",
                        help=f"a registry name ({', '.join(n for n, s in MODELS.items() if not s.super_resolution)}; random "
                             "weights) or an exported model directory")
    parser.add_argument("--resolution", type=int, default=None, help="px, for a registry name (default: its native size)")
    parser.add_argument("--images", type=int, default=4, help="images per batch (prompts cycle through 4 captions; seeds "
                        "--seed, --seed + 1, ...)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (comparison mode)")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--scheduler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER, help="sampler (comparison mode)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, after one untimed warm-up run")
    parser.add_argument("--seed", type=int, default=0, help="first image seed; also the seed of random weights")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--steps-table", action="store_true",
                        help="time our pipeline for each --table configuration and compare their images instead")
    parser.add_argument("--fid-reference", metavar="SOURCE",
                        help="--steps-table: prompts are SOURCE's first --images validation captions; FID/KID of each "
                             "configuration against SOURCE's validation photos")
    parser.add_argument("--paths", action="store_true",
                        help="time each inference path of the shipped model (fp32 eager, channels_last, onnxruntime, auto; "
                             "see paths_table) with FLOPs, measured peaks and the images' difference from the first; "
                             "writes benchmarks/results/sampling_paths.json")
    parser.add_argument("--student", action="store_true",
                        help="--paths: also the default folder's few-step student at 1, 2, 4 and 8 steps, eager and auto")
    parser.add_argument("--table", default=STEPS_TABLE, help="sampler:steps list for --steps-table; the first is the reference")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: benchmarks/results/sampling.json, or sampling_steps.json with --steps-table)")
    args = parser.parse_args()

    if args.images < 1 or args.steps < 1 or args.repeats < 1:
        raise SystemExit("--images, --steps and --repeats must be at least 1")
    if args.guidance < 1:
        raise SystemExit("--guidance below 1: the Stable Diffusion loop turns guidance off there and ours does not; use 1 or more")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out or REPO / "benchmarks/results" / ("sampling_steps.json" if args.steps_table else "sampling.json")
    logging.getLogger("diffusers.utils.torch_utils").setLevel(logging.WARNING)  # "generator on cpu" notes on CUDA
    if args.paths:
        result = run_paths(args)
        print_paths(result)
        report = {"benchmark": "sampling_paths", "machine": machine(device), "settings": {
            "images": args.images, "num_inference_steps": args.steps, "guidance_scale": args.guidance, "scheduler": args.scheduler,
            "repeats": args.repeats, "seed": args.seed, "command": " ".join(sys.argv)}, "results": result}
        out = args.out or REPO / "benchmarks/results/sampling_paths.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return

    with tempfile.TemporaryDirectory(prefix="sampling-benchmark-") as scratch:
        pipe, source = load_pipeline(args.model, args.resolution, args.device, args.dtype, Path(scratch), args.seed)
    if args.steps_table and source["random_weights"]:
        print("warning: random weights: the pixel differences of the steps table say nothing about a trained model",
              file=sys.stderr)
    print(f"{source['model']}: {source['resolution']} px, {source['params'] / 1e6:.2f}M parameters, {args.images} images, "
          f"{args.device} {args.dtype}, {torch.get_num_threads()} threads", file=sys.stderr)

    settings = {"images": args.images, "guidance_scale": args.guidance, "repeats": args.repeats, "seed": args.seed,
                "dtype": args.dtype, "command": " ".join(sys.argv)}
    if args.steps_table:
        settings["table"] = args.table
        result = steps_table(args, pipe, device)
    else:
        settings.update(num_inference_steps=args.steps, scheduler=args.scheduler,
                        baseline=f"StableDiffusionPipeline.__call__ denoising loop ({DIFFUSERS_FILE}), output_type='latent'")
        result = compare(args, pipe, source, device)
    report = {"benchmark": "sampling_steps" if args.steps_table else "sampling", "machine": machine(device),
              "model": source, "settings": settings, "results": result}
    if args.steps_table:
        print_table(result)
    else:
        print_comparison(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
