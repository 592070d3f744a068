"""Judge generated garments: FID/KID, critic score, R-precision, attribute accuracy, critic_is and a
memorisation check, each beside the same score for real validation photos.

    python evaluate.py --model runs/001-small64/export --captions ../shared/data/fashion-products --num-images 500 --out eval/
    python evaluate.py --images submission/ --out eval-submission/          # a challenge set or a sample.py folder
    python evaluate.py --model MODEL --captions SOURCE --num-images 200 --sweep guidance=1,2,3,5 steps=10,20 --out sweep/
    python evaluate.py --model MODEL --captions SOURCE --size 256 [--no-superres] --out eval-256/   # upsampler vs Lanczos
    python evaluate.py --upsampling fashiongen/pretrained --reference ../shared/data/fashion-products --out eval-upsampling/
    python evaluate.py --reference ../shared/data/fashion-products --stats-only --resolution 64
    python evaluate.py --train-critic ../shared/data/fashion-products [configs/critic.yaml] [key=value ...]

Writes report.json (every number with its sample count, the model and settings) and report.md with plots.
Bad input (an option out of range, an --out that is a file, read-only or being written by another process,
a listed image outside the --images folder or not a regular file, a reference of fewer than 2 images) ends with
one line `error: ...` and exit code 2. An --out holding another evaluation's report, or files this one did not
write (an edited report.md: evaluation.json records what was written), is refused unless --overwrite; the same
evaluation run again resumes there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from fashiongen.errors import ArgumentParser, command
from fashiongen.config import load_config
from fashiongen.evaluation.fid import MIN_FID_IMAGES, reference_stats
from fashiongen.evaluation.images import read_dataset_images, read_image_folder
from fashiongen.evaluation.restoration import bicubic, lanczos, restoration_report, stage_method, upsampling_stage
from fashiongen.evaluation.report import ReportFolder, claimed, sweep_plot
from fashiongen.evaluation.suite import EvaluationSetup, evaluate_set
from fashiongen.families import sampler_names
from fashiongen.models.runtime import RUNTIMES
from fashiongen.pipeline import FashionGenPipeline, model_path
from fashiongen.settings import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    PipelineInputError,
    SamplingSettings,
    check_range,
    check_seeds,
)
from fashiongen.submission import CaptionItem, generate_submission, read_caption_list
from fashiongen.utils import atomic_write_text, output_lock

BUNDLED_DATA = "../shared/data/fashion-products"
SWEEP_KEYS = {"guidance": "guidance_scale", "steps": "num_inference_steps", "scheduler": "scheduler", "truncation": "truncation"}
SETTING_OPTIONS = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "scheduler": "--scheduler",
                   "truncation": "--truncation"}
MAX_IMAGES = 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_argument_group("what to evaluate (one of)")
    mode.add_argument("--model", help="generate from this model (export, pipeline, checkpoint or run; or a shipped one by "
                      "name: diffusion, student, gan), then score")
    mode.add_argument("--images", help="score a folder: a challenge submission, a sample.py folder or plain images")
    mode.add_argument("--upsampling", action="append", metavar="STAGE",
                      help="score upsampling stages (an upsampler, or a model folder's last stage; repeatable) beside "
                           "Lanczos and bicubic on the --reference validation photos, box-downsampled to their input")
    mode.add_argument("--stats-only", action="store_true", help="only precompute the reference FID statistics")
    mode.add_argument("--train-critic", metavar="SOURCE", help="train the critic on SOURCE's train split")
    parser.add_argument("rest", nargs="*", help="--train-critic: YAML configs then key=value overrides")
    parser.add_argument("--out", default="eval", help="report folder (default eval/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds another evaluation's report or files it did not write "
                             "(an edited report.md); the same evaluation run again resumes without it")
    parser.add_argument("--captions", help="caption list: dataset source (its --split) or JSONL of {id, caption}")
    parser.add_argument("--split", help="split of --captions (default: the source's own: all of a single .h5 file, "
                                        "else validation)")
    parser.add_argument("--num-images", type=int, default=200, help="images to generate (default 200)")
    parser.add_argument("--per-caption", type=int, default=1, help="images per caption (default 1)")
    parser.add_argument("--steps", type=int, help=f"diffusion: sampling steps (default {DEFAULT_STEPS})")
    parser.add_argument("--guidance", type=float, help=f"diffusion: guidance scale (default {DEFAULT_GUIDANCE:g})")
    parser.add_argument("--scheduler", help=f"sampler (default: {DEFAULT_SAMPLER} for diffusion, the family's own otherwise)")
    parser.add_argument("--truncation", type=float, help="GAN: latent truncation (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attributes", choices=("auto", "on", "off"), default="auto",
                        help="condition on each caption's attributes (auto: when the model was trained with them)")
    parser.add_argument("--sweep", nargs="+", metavar="KEY=V1,V2", help="guidance=1,2,3 steps=10,20 scheduler=ddim,dpm++")
    parser.add_argument("--reference", help=f"real images: dataset source (default: the model's training data, else {BUNDLED_DATA})")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="held-out share of sources without their own split")
    parser.add_argument("--num-real", type=int, help="real validation images to use (default all)")
    parser.add_argument("--resolution", type=int, help="resize every image to this size (needed for mixed sizes)")
    parser.add_argument("--size", type=int, help="--model: generate at this size (default: the model's largest stage; the "
                                                 "cascade runs up to it, then Lanczos)")
    parser.add_argument("--superres", action="append", default=[], help="--model: a stage to add (an upsampler; repeatable)")
    parser.add_argument("--base", help="--model: another base model its folder offers (e.g. student)")
    parser.add_argument("--input-size", type=int, default=64, help="--upsampling: the photos are box-downsampled to this (default 64)")
    parser.add_argument("--no-superres", action="store_true",
                        help="--model: the base model alone, its own later stages dropped (--size is then a Lanczos resize)")
    parser.add_argument("--critic", default=None, help="saved critic (default: the bundled one); 'none' skips critic scores")
    parser.add_argument("--no-memorisation", action="store_true", help="skip the nearest-training-neighbour search")
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="eager", choices=list(RUNTIMES),
                        help="--model: how diffusion stages run their network (docs/fast-path.md; default eager)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"],
                        help="--model: the networks' compute dtype (default float32; auto: bfloat16 where this CPU has "
                             "fast kernels for it; with --runtime eager the weights are cast)")
    parser.add_argument("--cache-dir", default=".cache/fashiongen/eval")
    parser.add_argument("--quiet", action="store_true")
    options = parser.parse_args(argv)
    chosen = [bool(options.model), bool(options.images), bool(options.upsampling), options.stats_only, bool(options.train_critic)]
    if sum(chosen) != 1:
        parser.error("choose exactly one of --model, --images, --upsampling, --stats-only and --train-critic")
    return options


def parse_sweep(items: list[str]) -> list[dict[str, object]]:
    """['guidance=1,2', 'steps=10,20'] -> every combination as {'guidance_scale': 1.0, 'num_inference_steps': 10}."""
    axes: dict[str, list[object]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or key not in SWEEP_KEYS or not values:
            raise PipelineInputError(f"--sweep {item!r}: expected KEY=V1,V2 with KEY one of {', '.join(SWEEP_KEYS)}")
        kind = {"guidance": float, "steps": int, "scheduler": str, "truncation": float}[key]
        try:
            axes[SWEEP_KEYS[key]] = [kind(v) for v in values.split(",")]
        except ValueError:
            raise PipelineInputError(f"--sweep {item!r}: values must be {kind.__name__}s") from None
    return [dict(zip(axes, combination)) for combination in itertools.product(*axes.values())]


def given_settings(options: argparse.Namespace) -> dict[str, object]:
    """The sampling settings the command line sets explicitly (the rest are the defaults, or the model family's)."""
    values = {"num_inference_steps": options.steps, "guidance_scale": options.guidance, "scheduler": options.scheduler,
              "truncation": options.truncation}
    return {field: value for field, value in values.items() if value is not None}


def sweep_point(settings: SamplingSettings, point: dict[str, object]) -> SamplingSettings:
    """The settings of one --sweep point: `settings` with the point's values, checked under the --sweep names."""
    return SamplingSettings.parse(names={field: f"--sweep {key}" for key, field in SWEEP_KEYS.items()},
                                  samplers=sampler_names(), **{**settings.to_dict(), **point})


def check_options(options: argparse.Namespace) -> SamplingSettings:
    """Every number of the command line in range (SamplingSettings' bounds for the sampling settings and
    every --sweep point) before anything is read or written; PipelineInputError naming the option."""
    settings = SamplingSettings.parse(names=SETTING_OPTIONS, samplers=sampler_names(), **given_settings(options))
    for name, size in (("--resolution", options.resolution), ("--size", options.size), ("--input-size", options.input_size)):
        if size is not None:
            SamplingSettings.parse(names={"size": name}, size=size)
    for point in parse_sweep(options.sweep or []):
        sweep_point(settings, point)
    for name, value, low in (("--num-images", options.num_images, 1), ("--per-caption", options.per_caption, 1),
                             ("--num-real", options.num_real, MIN_FID_IMAGES), ("--kid-subset-size", options.kid_subset_size, 2)):
        if value is not None:
            check_range(name, value, low, MAX_IMAGES)
    check_range("--val-fraction", options.val_fraction, 0.0, 1.0)
    check_seeds("--seed", options.seed)
    return settings


# Options that do not change what an evaluation reports: running it again with other values resumes the same job.
NOT_THE_JOB = {"out", "overwrite", "quiet", "device", "cache_dir", "runtime", "dtype", "rest", "train_critic", "stats_only"}
PATH_OPTIONS = {"model", "images", "captions", "reference", "critic", "base", "superres", "upsampling"}


def job_of(options: argparse.Namespace) -> dict[str, Any]:
    """What the report in --out is the evaluation of: every option that decides it, paths made absolute."""
    def absolute(value: Any) -> Any:
        if isinstance(value, list):
            return [absolute(item) for item in value]
        return str(Path(value).resolve()) if isinstance(value, str) and Path(value).exists() else value

    return {key: absolute(value) if key in PATH_OPTIONS else value
            for key, value in sorted(vars(options).items()) if key not in NOT_THE_JOB}


def setup_from(options: argparse.Namespace, reference: str) -> EvaluationSetup:
    setup = EvaluationSetup(reference=reference, num_real=options.num_real, val_fraction=options.val_fraction, kid_subset_size=options.kid_subset_size,
                            memorisation=not options.no_memorisation, device=options.device, cache_dir=options.cache_dir,
                            show_progress=not options.quiet)
    if options.critic is not None:
        setup = replace(setup, critic=None if options.critic.lower() == "none" else options.critic)
    return setup


def read_captions(pipe: FashionGenPipeline, options: argparse.Namespace) -> list[CaptionItem]:
    """--captions, built the way the model's training captions were."""
    return read_caption_list(options.captions, split=options.split,
                             caption_mode=pipe.stages[0].info.data.caption_mode)


def use_attributes(pipe: FashionGenPipeline, options: argparse.Namespace) -> bool:
    """--attributes: auto conditions on them exactly when the model has an attribute vocabulary."""
    has_vocab = bool(pipe.attribute_vocab)
    if options.attributes == "on" and not has_vocab:
        raise PipelineInputError("--attributes on: this model was trained without attributes")
    return options.attributes == "on" or (options.attributes == "auto" and has_vocab)


def generate(pipe: FashionGenPipeline, options: argparse.Namespace, captions: list[CaptionItem], settings: SamplingSettings,
             out: Path) -> Path:
    """A resumable submission-format set of --num-images images for captions spread evenly over --captions
    (its first rows are often one category: a biased subset would inflate FID)."""
    needed = -(-options.num_images // options.per_caption)
    if needed > len(captions):
        raise PipelineInputError(f"--num-images {options.num_images} needs {needed} captions at --per-caption "
                                 f"{options.per_caption}; {options.captions} has {len(captions)} (raise --per-caption)")
    chosen = captions[:: max(1, len(captions) // needed)][:needed]
    generate_submission(pipe, chosen, out, options.per_caption, settings, resolution=options.size or pipe.resolution,
                        base_seed=options.seed, use_attributes=use_attributes(pipe, options), show_progress=not options.quiet)
    return out


def run(options: argparse.Namespace) -> str:
    if options.train_critic:  # the same training as `python -m fashiongen.train critic`; Accelerate loads only here
        from fashiongen.train import TrainingStopped
        from fashiongen.train.critic import train_critic

        config = load_config([p for p in options.rest if p.endswith((".yaml", ".yml"))] or ["configs/critic.yaml"],
                             [f"data.source={options.train_critic}"] + [o for o in options.rest if "=" in o])
        try:
            return f"critic saved in {train_critic(config, show_progress=not options.quiet)}"
        except TrainingStopped as stopped:  # a checkpoint was saved; the same command resumes from it
            print(stopped, file=sys.stderr)
            raise SystemExit(stopped.exit_code) from None
    settings = check_options(options)
    out = Path(options.out)
    if options.stats_only:
        reference = options.reference or BUNDLED_DATA
        stats = reference_stats(reference, "validation", options.resolution or 64, options.num_real,
                                cache_dir=str(Path(options.cache_dir) / "fid"), device=options.device,
                                show_progress=not options.quiet, val_fraction=options.val_fraction)
        return f"reference statistics of {stats.count} images of {reference} cached under {options.cache_dir}/fid"
    if options.images:
        attributes = {}
        if options.captions:
            attributes = {item.id: item.attributes for item in read_caption_list(options.captions, split=options.split)}
        with output_lock(out), claimed(out, job_of(options), options.overwrite):  # one writer; our folder only
            generated = read_image_folder(options.images, options.resolution, attributes)
            report = evaluate_set(generated, setup_from(options, options.reference or BUNDLED_DATA), out)
        return summary(report, out)
    if options.upsampling:
        with output_lock(out), claimed(out, job_of(options), options.overwrite):
            return evaluate_upsampling(options, out)
    if not options.captions:
        raise PipelineInputError("--model needs --captions (a dataset source or a JSONL of {id, caption})")
    with output_lock(out), claimed(out, job_of(options), options.overwrite) as folder:  # and its generated/ sets
        return evaluate_model(options, settings, out, folder)


def evaluate_upsampling(options: argparse.Namespace, out: Path) -> str:
    """Each --upsampling stage beside Lanczos and bicubic on real validation photos (evaluation/restoration.py)."""
    stages = [(path, *upsampling_stage(path, options.device)) for path in options.upsampling]
    sizes = {stage.resolution for _, stage, _ in stages}
    if len(sizes) != 1:
        raise PipelineInputError(f"--upsampling: the stages make different sizes ({sorted(sizes)}); compare one size at a time")
    (size,) = sizes
    input_size = options.input_size
    if size % input_size:
        raise PipelineInputError(f"--input-size {input_size}: the stages make {size} px, not a multiple of it")
    reference = options.reference or BUNDLED_DATA
    photos = read_dataset_images(reference, "validation", size, options.num_real, options.val_fraction, minimum=MIN_FID_IMAGES)
    captions = list(photos.captions or [""] * len(photos))
    methods = {"lanczos": lanczos(size), "bicubic": bicubic(size)}
    for path, stage, encoder in stages:
        methods[f"{stage.family} ({path})"] = stage_method(stage, encoder, captions)
    report = restoration_report(photos, input_size, methods, out, device=options.device, show_progress=not options.quiet)
    best = min(report["methods"].items(), key=lambda item: item[1]["fid"])
    return f"{len(methods)} methods on {len(photos)} photos; lowest FID: {best[0]} ({best[1]['fid']:.2f}); {out / 'report.md'}"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def sweep_row(point: dict[str, Any], report: dict[str, Any], where: str) -> dict[str, Any]:
    """One sweep point's scores: FID, KID, the critic's score, R-precision and each attribute's accuracy (generated)."""
    metrics = report["metrics"]
    critic = (metrics.get("critic_score") or {}).get("generated") or {}
    precision = (metrics.get("r_precision") or {}).get("generated") or {}
    accuracy = {name: (scores.get("generated") or {}).get("accuracy")
                for name, scores in (metrics.get("attribute_accuracy") or {}).items()}
    return {"setting": point, "fid": metrics["fid"]["value"], "kid": metrics["kid"]["mean"], "critic_score": critic.get("mean"),
            "r_precision": precision.get("mean"), "attribute_accuracy": {k: v for k, v in accuracy.items() if v is not None},
            "num_images": report["meta"]["num_generated"], "report": where}


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """sweep.md: one row a sweep point, FID, KID, the critic's score, R-precision and each attribute's accuracy."""
    accuracy_names = sorted({name for row in rows for name in row["attribute_accuracy"]})
    lines = ["| " + " | ".join([*rows[0]["setting"], "FID", "KID", "critic score", "R-precision",
                                *(f"{name} accuracy" for name in accuracy_names)]) + " |",
             "|" + "---|" * (len(rows[0]["setting"]) + 4 + len(accuracy_names))]
    lines += ["| " + " | ".join(str(v) for v in row["setting"].values()) + f" | {row['fid']:.2f} | {row['kid']:.4f} | "
              + " | ".join(_cell(v) for v in [row["critic_score"], row["r_precision"],
                                              *(row["attribute_accuracy"].get(name) for name in accuracy_names)]) + " |"
              for row in rows]
    return "# Sweep\n\n" + "\n".join(lines) + "\n\n![sweep](sweep.png)\n"


def evaluate_model(options: argparse.Namespace, settings: SamplingSettings, out: Path, folder: ReportFolder) -> str:
    """Generate a submission-format set under out/generated (or one per --sweep point), then score it."""
    pipe = FashionGenPipeline.from_pretrained(model_path(options.model), superres=options.superres, device=options.device,
                                              runtime=options.runtime, dtype=options.dtype,
                                              base=options.base)
    if options.no_superres:
        pipe = pipe.base_only()
    folder.confirm(fingerprint=pipe.fingerprint)  # a model retrained at the same path is another evaluation
    pipe.show_progress = not options.quiet
    swept = {field for point in parse_sweep(options.sweep or []) for field in point}
    settings = pipe.settings_for_model(settings, set(given_settings(options)) | swept, SETTING_OPTIONS)
    reference = options.reference or pipe.stages[0].info.data.source or BUNDLED_DATA
    size = options.size or pipe.resolution
    used = pipe.stages_for(size)  # how the images reach their size: the stages after the base, then a resize if needed
    after_base = [stage.family for stage in used[1:]] + (["lanczos"] if used[-1].resolution != size else [])
    meta = {"model": pipe.describe(), "settings": pipe.settings_record(settings) | {
        "size": size, "after_base": after_base, "seed": options.seed, "per_caption": options.per_caption,
        "attributes": use_attributes(pipe, options)}}
    captions = read_captions(pipe, options)
    attributes = {item.id: item.attributes for item in captions}  # what attribute accuracy checks each image against
    if not options.sweep:
        folder = generate(pipe, options, captions, settings, out / "generated")
        report = evaluate_set(read_image_folder(folder, None, attributes), setup_from(options, reference), out, meta)
        return summary(report, out)
    rows = []
    for point in parse_sweep(options.sweep):
        name = "-".join(f"{key}={value}" for key, value in point.items())
        point_settings = sweep_point(settings, point)
        folder = generate(pipe, options, captions, point_settings, out / "sweep" / name / "generated")
        setup = replace(setup_from(options, reference), memorisation=False)
        report = evaluate_set(read_image_folder(folder, None, attributes), setup, out / "sweep" / name,
                              {**meta, "settings": meta["settings"] | pipe.settings_record(point_settings)})
        rows.append(sweep_row(point, report, f"sweep/{name}"))
    atomic_write_text(out / "sweep.json", json.dumps(rows, indent=2) + "\n")
    sweep_plot(rows, out / "sweep.png")
    atomic_write_text(out / "sweep.md", sweep_table(rows))
    return f"sweep of {len(rows)} settings: {out / 'sweep.md'}, {out / 'sweep.json'}, {out / 'sweep.png'}"


def summary(report: dict, out: Path) -> str:
    metrics = report["metrics"]
    parts = [f"FID {metrics['fid']['value']:.2f} ({metrics['fid']['num_generated']} vs {metrics['fid']['num_real']} images)",
             f"KID {metrics['kid']['mean']:.4f} ± {metrics['kid']['std']:.4f}"]
    for key in ("critic_score", "r_precision"):
        entry = metrics.get(key) or {}
        generated, real = entry.get("generated") or {}, entry.get("real") or {}
        if generated:
            parts.append(f"{key} {generated['mean']:.3f} (real {real.get('mean', float('nan')):.3f})")
    return "; ".join(parts) + f"\nreport: {out / 'report.md'}"


@command()
def main(argv: list[str] | None = None) -> int:
    """Bad input of any kind (a user's error) ends with one `error:` line and exit code 2 (fashiongen.errors)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
