"""Generate garments from text with a trained FashionGen model.

    python sample.py "red floral summer dress" "white sneakers" --num-images 4      # the shipped default model
    python sample.py --model runs/001-small64/export "a black leather biker jacket with silver zips" --num-images 4 --out samples/
    python sample.py --model MODEL --prompts prompts.txt          # one prompt per line, or JSONL {"prompt", "attributes", "seed"}
    python sample.py --model MODEL --submission ../shared/data/fashion-products --per-caption 4 --out submission/
    python sample.py --model MODEL --interpolate "a red midi dress" "a navy wool coat" --frames 8 --out lerp/
    python sample.py --model MODEL --edit shirt.jpg --strength 0.6 "the same shirt in red silk" [--mask sleeves.png]

MODEL is an exported model, a saved pipeline, a checkpoint or a run directory (default: fashiongen/pretrained/);
--superres adds stages (an upsampler); --no-superres drops the folder's own, so --size is a Lanczos resize again.

Bad input (an option out of range, an unreadable prompt file, an --out that is a file or read-only, an --out
another sample.py is writing) ends with one line `error: ...` naming it and exit code 2, before a model is
loaded or anything is written. Seeds are integers in [0, 2**64): every image's seed, --seed + i included.
An --out folder must be new, empty or this same job's (it resumes); a folder holding anything else (a user's
files, another kind of job, another model or other settings) is refused unless --overwrite. What a job holds in
memory at once (a batch, an interpolation's frames) is checked against fashiongen.jobs.JOB_MEMORY_BYTES once the
model's size is known, before any image is made.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from fashiongen.errors import ArgumentParser, command
from fashiongen.families import sampler_names
from fashiongen.models.runtime import RUNTIMES
from fashiongen.pipeline import FashionGenPipeline, load_image, model_path
from fashiongen.settings import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    PipelineInputError,
    SamplingSettings,
    check_range,
    check_seeds,
)
from fashiongen.job_folder import Job, check_folder, start_job
from fashiongen.jobs import check_held, most_held, write_edits, write_interpolation, write_samples
from fashiongen.prompts import MAX_JOB_IMAGES, PromptItem, check_text, clean_prompt, read_prompts
from fashiongen.submission import CaptionItem, generate_submission, read_caption_list
from fashiongen.utils import output_lock

# The option each sampling setting is given by, so that SamplingSettings.parse's messages name it.
SETTING_OPTIONS = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "scheduler": "--scheduler",
                   "negative_prompt": "--negative", "size": "--size", "truncation": "--truncation"}
OPTION_FIELDS = {"steps": "num_inference_steps", "guidance": "guidance_scale", "scheduler": "scheduler", "negative": "negative_prompt",
                 "size": "size", "truncation": "truncation"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", nargs="*", help="prompts (or the new description with --edit)")
    parser.add_argument("--model", help="exported model, saved pipeline, checkpoint or run directory, or a shipped model by "
                                        "name: diffusion (the default), student (its 4-step student) or gan")
    parser.add_argument("--base", help="another base model the --model folder offers, e.g. student (its few-step student; "
                                       "--model student is the shipped one)")
    parser.add_argument("--superres", action="append", default=[], help="a super-resolution stage to add (repeatable)")
    parser.add_argument("--no-superres", action="store_true",
                        help="the base model alone, the folder's own later stages dropped (--size is then a Lanczos resize)")
    parser.add_argument("--out", default="samples", help="output folder (default: samples/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder that holds files of someone else's, another job or another model")
    parser.add_argument("--prompts", dest="prompt_file", help="text file (one prompt per line) or JSONL of prompts")
    parser.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--steps", type=int, help=f"diffusion: sampling steps (default {DEFAULT_STEPS})")
    parser.add_argument("--guidance", type=float,
                        help=f"diffusion: classifier-free guidance scale (default {DEFAULT_GUIDANCE:g}; 1 = none)")
    parser.add_argument("--scheduler", choices=sampler_names(),
                        help=f"sampler (default: {DEFAULT_SAMPLER} for diffusion models, the family's own otherwise)")
    parser.add_argument("--truncation", type=float, help="GAN: redraw latent values beyond this many std (default: the "
                                                         "model's; 0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; image i gets seed + i (default 0)")
    parser.add_argument("--negative", help="diffusion: negative prompt, used in place of the empty caption")
    parser.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE",
                        help="attribute conditioning, e.g. --attribute category=Dresses (repeatable)")
    parser.add_argument("--use-attributes", action="store_true",
                        help="--submission: also condition on each caption's attributes (a model trained with them)")
    parser.add_argument("--size", type=int, help="output size in px (default: the model's; the cascade runs up to it)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default 8 on CPU, 32 on GPU; halves on OOM)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "auto"],
                        help="with --runtime eager: the weights' dtype; otherwise the compute dtype (float32 where this CPU "
                             "has no fast kernels for it); auto: bfloat16 where fast, else float32")
    parser.add_argument("--runtime", default="eager", choices=list(RUNTIMES),
                        help="how diffusion stages run their network: eager (default), channels_last, onnxruntime (graph "
                             "exported once, cached in $FASHIONGEN_CACHE or ~/.cache/fashiongen), auto (the fastest here; "
                             "docs/fast-path.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    challenge = parser.add_argument_group("challenge submission sets")
    challenge.add_argument("--submission", metavar="CAPTIONS", help="dataset source or JSONL of {id, caption}")
    challenge.add_argument("--per-caption", type=int, default=1, help="images per caption (default 1)")
    challenge.add_argument("--split", help="split of a dataset source (default: the source's own: all of a single .h5 "
                                           "file, else validation)")
    challenge.add_argument("--resolution", type=int, default=256, help="submission image size (default 256, the challenge's)")
    challenge.add_argument("--limit", type=int, help="only the first N captions")
    interpolation = parser.add_argument_group("interpolation")
    interpolation.add_argument("--interpolate", nargs=2, metavar=("A", "B"), help="interpolate from prompt A to prompt B")
    interpolation.add_argument("--frames", type=int, default=8, help="frames including both ends (default 8)")
    interpolation.add_argument("--seed-b", type=int, help="seed of the last frame (default --seed + 1)")
    editing = parser.add_argument_group("editing")
    editing.add_argument("--edit", metavar="IMAGE", help="photo to edit with the prompt's description")
    editing.add_argument("--strength", type=float, default=0.6, help="0 keeps the photo, 1 ignores it (default 0.6)")
    editing.add_argument("--mask", metavar="MASK", help="with --edit: repaint only the mask's white region")
    return parser.parse_args(argv)


def parse_attributes(pairs: list[str]) -> dict[str, str]:
    attributes = {}
    for pair in pairs:
        name, sep, value = check_text(pair, "--attribute").partition("=")
        if not sep or not name.strip():
            raise PipelineInputError(f"--attribute {pair!r}: expected NAME=VALUE, e.g. category=Dresses")
        attributes[name.strip()] = value.strip()
    return attributes


def given_settings(options: argparse.Namespace) -> dict[str, object]:
    """The sampling settings the command line sets explicitly (the rest are the defaults, or the model family's)."""
    return {field: getattr(options, option) for option, field in OPTION_FIELDS.items() if getattr(options, option) is not None}


def check_options(options: argparse.Namespace) -> SamplingSettings:
    """Every number of the command line in range (SamplingSettings' bounds for the sampling settings), before any
    input is read; PipelineInputError naming the option. The settings are built here, once, and passed through."""
    settings = SamplingSettings.parse(names=SETTING_OPTIONS, **given_settings(options))
    SamplingSettings.parse(names={"size": "--resolution"}, size=options.resolution)
    counts = {"--num-images": (options.num_images, 1), "--per-caption": (options.per_caption, 1), "--frames": (options.frames, 2),
              "--batch-size": (options.batch_size, 1), "--limit": (options.limit, 1)}
    for name, (value, low) in counts.items():
        if value is not None:
            check_range(name, value, low, MAX_JOB_IMAGES)
    check_range("--strength", options.strength, 0.0, 1.0)
    check_seeds("--seed", options.seed)
    if options.seed_b is not None:
        check_seeds("--seed-b", options.seed_b)
    return settings


def read_inputs(options: argparse.Namespace, attributes: dict[str, str]) -> list[PromptItem] | list[CaptionItem]:
    """The prompt sheet's prompts or the submission's captions, with the seeds they need checked."""
    if options.submission:
        captions = read_caption_list(options.submission, split=options.split)[: options.limit]
        check_range(f"--per-caption ({len(captions)} captions)", len(captions) * options.per_caption, 1, MAX_JOB_IMAGES)
        return captions
    if options.interpolate:
        check_seeds("--seed", options.seed, 2 if options.seed_b is None else 1)  # the last frame's seed is --seed + 1
        options.interpolate = [clean_prompt(prompt, f"--interpolate {end}") for prompt, end in zip(options.interpolate, "AB")]
        return []
    if options.edit:
        if len(options.prompts) != 1:
            raise PipelineInputError("--edit takes exactly one prompt: the new description")
        options.prompts = [clean_prompt(options.prompts[0], "the --edit prompt")]
        for name, path in (("--edit", options.edit), ("--mask", options.mask)):
            if path is not None:  # decoded within the upload limits now, so a bad photo is refused before the model loads
                load_image(path, name)
        check_seeds("--seed", options.seed, options.num_images)
        return []
    items = [PromptItem(clean_prompt(prompt, f"prompt {number}"), attributes) for number, prompt in enumerate(options.prompts, 1)]
    if options.prompt_file:
        items += [PromptItem(i.prompt, {**attributes, **i.attributes}, i.seed)
                  for i in read_prompts(options.prompt_file, options.num_images)]
    if not items:
        raise PipelineInputError("no prompts: give them as arguments or with --prompts FILE")
    check_range(f"--num-images ({len(items)} prompts)", len(items) * options.num_images, 1, MAX_JOB_IMAGES)
    check_seeds("--seed", options.seed, len(items) * options.num_images)  # image i of the sheet gets --seed + i
    return items


def run(options: argparse.Namespace) -> str:
    modes = [bool(options.submission), bool(options.interpolate), bool(options.edit)]
    if sum(modes) > 1:
        raise PipelineInputError("choose one of --submission, --interpolate and --edit")
    settings = check_options(options)
    attributes = parse_attributes(options.attribute)
    inputs = read_inputs(options, attributes)
    out = Path(options.out)
    kind = "submission" if options.submission else "interpolation" if options.interpolate else "edit" if options.edit \
        else "prompt-sheet"
    with output_lock(out):  # one writer per folder, held until the job ends (or its process dies)
        check_folder(out, kind, options.overwrite)  # before the model loads; its model and settings are checked after
        return run_job(options, settings, attributes, inputs, out)


def run_job(options: argparse.Namespace, settings: SamplingSettings, attributes: dict[str, str],
            inputs: list[PromptItem] | list[CaptionItem], out: Path) -> str:
    pipe = FashionGenPipeline.from_pretrained(model_path(options.model), superres=options.superres, device=options.device,
                                              dtype=options.dtype, runtime=options.runtime, base=options.base)
    if options.no_superres:
        pipe = pipe.base_only()
    pipe.show_progress = not options.quiet
    settings = pipe.settings_for_model(settings, set(given_settings(options)) - {"size"}, SETTING_OPTIONS)
    made = replace(settings, size=options.resolution) if options.submission else settings
    if options.batch_size:
        check_held("--batch-size", pipe, made, options.batch_size)
        pipe.batch_size = options.batch_size
    pipe.batch_size = min(pipe.batch_size, most_held(pipe, made))  # the default batch, smaller for large images
    if options.submission:
        captions = inputs
        start_job(out, Job("submission", pipe.fingerprint), options.overwrite)  # its own header holds the rest
        summary = generate_submission(pipe, captions, out, options.per_caption, settings, resolution=options.resolution,
                                      base_seed=options.seed, use_attributes=options.use_attributes,
                                      show_progress=not options.quiet)
        return (f"{summary.written} images written, {summary.skipped} already there: {summary.total} in {out} "
                f"(check with: python -m fashiongen.submission validate {out})")
    if options.interpolate:
        seed_b = options.seed + 1 if options.seed_b is None else options.seed_b
        paths = write_interpolation(pipe, *options.interpolate, settings, out, options.seed, seed_b, options.frames, attributes,
                                    overwrite=options.overwrite)
        return f"{len(paths)} frames, strip.png and interpolation.gif/.webp in {out}"
    if options.edit:
        paths = write_edits(pipe, options.edit, options.prompts[0], settings, out, options.strength, options.mask,
                            options.num_images, options.seed, attributes, overwrite=options.overwrite)
        return f"{len(paths)} edited images and grid.png in {out}"
    rows = write_samples(pipe, inputs, settings, out, options.num_images, options.seed, overwrite=options.overwrite)
    return f"{len(rows)} images, grid.png and manifest.jsonl in {out}"


@command()
def main(argv: list[str] | None = None) -> int:
    """Bad input of any kind (a user's error) ends with one `error:` line and exit code 2 (fashiongen.errors)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
