"""How well an upsampling stage brings real photos back: each validation photo at the stage's output size is
box-downsampled to its input size, then brought back by Lanczos, bicubic and each stage, and every result is compared
with the photo: PSNR, SSIM, an Inception-feature distance, FID/KID against the photos, and milliseconds per image.

    stage, encoder = upsampling_stage("fashiongen/pretrained")                 # a model folder's last stage
    methods = {"lanczos": lanczos(256), "upsampler": stage_method(stage, encoder, photos.captions)}
    report = restoration_report(photos, 64, methods, out_dir)

The judges are the same as everywhere else (the TF-Inception network); none of them trains anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..data.transforms import to_uint8
from ..families import load_generator
from ..generators import LOW_RES, GenerationInputs, Generator
from ..grid import captioned_grid, save_image
from ..models.files import PIPELINE_INFO_FILE as PIPELINE_FILE
from ..models.files import ModelFileError
from ..pipeline import FashionGenPipeline, encoder_for
from ..settings import SamplingSettings
from ..text import CaptionEncoder, TextEncoding
from ..utils import atomic_write_text
from .fid import FeatureStats, fid_and_kid
from .images import ImageSet
from .inception import extract_features, load_inception

Method = Callable[[Tensor, slice], Tensor]  # (low [n, 3, r, r] in [-1, 1], which photos) -> [n, 3, R, R] in [-1, 1]


def to_float(images: list[np.ndarray]) -> Tensor:
    """uint8 [H, W, 3] images -> [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def box_downsample(images: Tensor, size: int) -> Tensor:
    """[N, 3, R, R] -> [N, 3, size, size] by the box filter, on 8-bit levels (what a saved 64 px image holds)."""
    low = F.avg_pool2d(images, images.shape[-1] // size)
    return ((low.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def consistency(output: Tensor, low: Tensor) -> dict[str, float]:
    """How far `output` [N, 3, R, R], saved as 8-bit and box-downsampled to `low`'s size, is from `low` (both in [-1, 1]):
    mean, 99th percentile and max absolute difference in 8-bit levels."""
    saved = ((output.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    difference = ((box_downsample(saved, low.shape[-1]) - low).abs() * 127.5).round().flatten()
    return {"mean": float(difference.mean()), "p99": float(difference.kthvalue(max(1, int(0.99 * len(difference)))).values),
            "max": float(difference.max())}


def psnr(output: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR [N] in dB on the 8-bit scale, of images in [-1, 1]."""
    mse = (((output - target) * 127.5) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(255.0**2 / mse)


def ssim(output: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, chunk: int = 8) -> Tensor:
    """Per-image SSIM [N] (Wang et al. 2004: an 11x11 gaussian window of std 1.5, K1 0.01, K2 0.03, the 8-bit range),
    averaged over the RGB channels and the valid window positions; in chunks, so memory stays small for any count."""
    if len(output) > chunk:
        return torch.cat([ssim(output[i : i + chunk], target[i : i + chunk], window, sigma, chunk)
                          for i in range(0, len(output), chunk)])
    x, y = output.float() * 127.5, target.float() * 127.5  # centred 8-bit levels: float32 keeps the variances exact enough
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).float()
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [N, 15, H, W]: one separable blur for all five
    channels = stacked.shape[1]
    blurred = F.conv2d(F.conv2d(stacked, g.view(1, 1, 1, window).expand(channels, 1, 1, window), groups=channels),
                       g.view(1, 1, window, 1).expand(channels, 1, window, 1), groups=channels).double()
    m_x, m_y, xx, yy, xy = blurred.chunk(5, dim=1)
    var_x, var_y, cov = xx - m_x**2, yy - m_y**2, xy - m_x * m_y
    mu_x, mu_y = m_x + 127.5, m_y + 127.5
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(1).float()


def lanczos(size: int) -> Method:
    """PIL's Lanczos (what --size did before any stage was trained)."""
    def run(low: Tensor, rows: slice) -> Tensor:
        return to_float([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
                         for image in to_uint8(low)])
    return run


def bicubic(size: int) -> Method:
    def run(low: Tensor, rows: slice) -> Tensor:
        return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return run


def stage_method(stage: Generator, encoder: CaptionEncoder, captions: list[str]) -> Method:
    """A later stage of a cascade (an upsampler) through the generator interface, given each photo's caption (encoded
    once, before any timing)."""
    text, empty = encoder.encode(captions), encoder.encode([""] * len(captions))

    def run(low: Tensor, rows: slice) -> Tensor:
        count = len(low)
        part = TextEncoding(text.token_states[rows], text.mask[rows], text.pooled[rows])
        none = TextEncoding(empty.token_states[rows], empty.mask[rows], empty.pooled[rows])
        inputs = GenerationInputs(part, none, list(range(count)), [{}] * count)
        generators = [torch.Generator().manual_seed(seed) for seed in range(count)]
        return stage.generate(inputs, SamplingSettings(), generators, stage=1, low_res=low)
    return run


def upsampling_stage(path: str | Path, device: str = "cpu") -> tuple[Generator, CaptionEncoder]:
    """The stage `path` names: an upsampling model itself (export, run or checkpoint), or a model folder's last stage."""
    path = Path(path)
    if (path / PIPELINE_FILE).is_file():
        pipe = FashionGenPipeline.from_pretrained(path, device=device)
        if len(pipe.stages) < 2:
            raise ModelFileError(f"{path}: the folder carries no stage after its base model")
        return pipe.stages[-1], pipe.encoder
    stage = load_generator(path, device)
    if LOW_RES not in stage.conditioning:
        raise ModelFileError(f"{path}: a {stage.family} model is not an upsampling stage")
    return stage, encoder_for(stage, device)


def run_method(method: Method, low: Tensor, batch_size: int) -> tuple[Tensor, float]:
    """All images through `method` in batches; (outputs, seconds per image)."""
    outputs, start = [], time.perf_counter()
    for first in range(0, len(low), batch_size):
        rows = slice(first, first + batch_size)
        outputs.append(method(low[rows], rows).float().clamp(-1, 1))
    return torch.cat(outputs), (time.perf_counter() - start) / max(len(low), 1)


def restoration_report(photos: ImageSet, input_size: int, methods: dict[str, Method], out_dir: str | Path,
                       batch_size: int = 8, device: str = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Every method's scores on `photos` box-downsampled to `input_size`; report.json, report.md and comparison.png
    (four photos' middle quarters, zoomed 2x: input, each method, the photo) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    high = to_float(photos.images)
    low = box_downsample(high, input_size)
    inception = load_inception(device)
    real_features = extract_features(photos.images, device=device, show_progress=show_progress, inception=inception)
    real_stats = FeatureStats.from_features(real_features, source=photos.source)
    rows: dict[str, dict[str, Any]] = {}
    shown: dict[str, Tensor] = {}
    for name, method in methods.items():
        output, seconds = run_method(method, low, batch_size)
        images = list(to_uint8(output))
        features = extract_features(images, device=device, show_progress=show_progress, inception=inception)
        scores = fid_and_kid(real_stats, FeatureStats.from_features(features),  # subsets of half the set: they differ
                             subset_size=min(1000, max(2, len(images) // 2)))
        rows[name] = {"psnr": float(psnr(output, high).mean()), "ssim": float(ssim(output, high).mean()),
                      "feature_distance": float(np.linalg.norm(features - real_features, axis=1).mean()),
                      "fid": scores["fid"], "kid_mean": scores["kid_mean"], "kid_std": scores["kid_std"],
                      "kid_subset_size": scores["kid_subset_size"],
                      "ms_per_image": 1000 * seconds, "consistency": consistency(output, low)}
        shown[name] = output[:4]
    report = {"meta": {"photos": photos.source, "count": len(photos), "output_size": high.shape[-1], "input_size": input_size,
                       "degradation": "box downsampling, 8-bit", "batch_size": batch_size, "device": device,
                       "threads": torch.get_num_threads(), "feature_distance": "mean L2 between Inception pool3 features "
                       "of each output and its photo"},
              "methods": rows}
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", restoration_markdown(report))
    _comparison(high[:4], low[:4], shown, out_dir / "comparison.png")
    return report


def restoration_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [f"# Upsampling {meta['input_size']} -> {meta['output_size']} px on {meta['count']} real photos", "",
             f"Photos: `{meta['photos']}`, box-downsampled to {meta['input_size']} px (8-bit), brought back by each method; "
             f"FID/KID against the photos themselves ({meta['count']} vs {meta['count']}; the photos score 0, the floor here; "
             f"KID over 100 subsets of {min(1000, max(2, meta['count'] // 2))}). Feature distance: "
             f"{meta['feature_distance']}. Timing: batches of {meta['batch_size']} on {meta['device']}, "
             f"{meta['threads']} threads. Consistency: the output saved as 8-bit and box-downsampled back to "
             f"{meta['input_size']} px against the input, mean / 99th percentile / max difference in 8-bit levels.", "",
             "| method | PSNR (dB) | SSIM | feature distance | FID | KID x 1000 | ms per image | consistency |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in report["methods"].items():
        lines.append(f"| {name} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['feature_distance']:.2f} | {row['fid']:.2f} | "
                     f"{1000 * row['kid_mean']:.2f} ± {1000 * row['kid_std']:.2f} | {row['ms_per_image']:.1f} | "
                     f"{row['consistency']['mean']:.2f} / {row['consistency']['p99']:.0f} / {row['consistency']['max']:.0f} |")
    return "\n".join(lines + ["", "![comparison](comparison.png)", ""])


def _comparison(high: Tensor, low: Tensor, shown: dict[str, Tensor], path: Path) -> None:
    size = high.shape[-1]
    q = size // 4
    columns = {"input": F.interpolate(low, size=(size, size), mode="nearest"), **shown, "photo": high}
    images, captions = [], []
    for row in range(len(high)):
        for name, picture in columns.items():
            crop = picture[row : row + 1, :, q : 3 * q, q : 3 * q]
            images.append(to_uint8(F.interpolate(crop, size=(size, size), mode="nearest"))[0])
            captions.append(name)
    save_image(captioned_grid(images, captions, columns=len(columns), tile=size, caption_lines=1), path)


__all__ = ["Method", "bicubic", "box_downsample", "consistency", "lanczos", "psnr", "restoration_report", "ssim", "stage_method",
           "upsampling_stage"]
