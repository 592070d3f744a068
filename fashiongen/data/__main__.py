"""`python -m fashiongen.data inspect SOURCE [--json]` and `python -m fashiongen.data convert SOURCE OUT --size 64`.

convert's OUT names what it writes: `OUT.h5` one file (the split --split picks, all by default); any other name a
folder holding both splits as a pair (`OUT/NAME_train.h5`, `OUT/NAME_validation.h5`), what training reads."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import ArgumentParser, command, input_errors
from ..settings import LIBRARY_LIMITS
from ..utils import atomic_write_text
from .convert import OutputError, check_output, convert_source, result_path, write_result
from .pairs import check_pair_output, convert_pair, is_pair_output
from .inspect import inspect_source, sample_grid
from .sources import READERS, open_source


def image_size(text: str) -> int:
    """--size: a whole number of pixels in the range the models use (8 to 4096), checked before anything is read."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, got {text!r}") from None
    if not LIBRARY_LIMITS.min_size <= size <= LIBRARY_LIMITS.max_size:
        raise argparse.ArgumentTypeError(f"must be between {LIBRARY_LIMITS.min_size} and {LIBRARY_LIMITS.max_size} px, "
                                         f"got {text}")
    return size


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a dataset path: FashionGen .h5 (or its folder), folder+JSONL/CSV, DeepFashion, Fashion-MNIST")
    parser.add_argument("--format", default="auto", choices=["auto", *READERS])
    parser.add_argument("--split", default="all", choices=["all", "train", "validation"])
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--caption-field", default="", help="caption column/key (default: the source's own)")
    parser.add_argument("--caption-template", default="", help="template for captions from attributes")
    parser.add_argument("--strict", action="store_true", help="fail on the first defective record instead of skipping it")
    parser.add_argument("--poses", nargs="*", default=[], help="FashionGen h5: keep only these poses")
    parser.add_argument("--one-pose-per-product", action="store_true", help="FashionGen h5: keep one pose per product")


def _open(args: argparse.Namespace):
    return open_source(
        args.source, format=args.format, split=args.split, val_fraction=args.val_fraction,
        skip_bad_records=not args.strict, caption_field=args.caption_field,
        poses=args.poses, one_pose_per_product=args.one_pose_per_product,
    )


@command(input_errors(OSError, ValueError))
def main(argv: list[str] | None = None) -> int:
    """Bad input (a source, a record, an output that exists or cannot be written): one `error:` line, exit 2."""
    parser = ArgumentParser(prog="python -m fashiongen.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="counts, attribute histograms, caption lengths and a sample grid")
    _add_source_arguments(inspect)
    inspect.add_argument("--out", type=Path, default=None, help="folder for report.json and grid.png (default outputs/inspect/NAME)")
    inspect.add_argument("--samples", type=int, default=16)
    inspect.add_argument("--seed", type=int, default=0)
    inspect.add_argument("--json", action="store_true", help="print the report as JSON (the last line of stdout)")
    convert = commands.add_parser("convert", help="write FashionGen-schema HDF5 at a fixed resolution: a train/validation "
                                  "pair into a folder, or one .h5 file")
    _add_source_arguments(convert)
    convert.add_argument("out", type=Path, help="a folder (new, or one convert wrote) for the train/validation pair, "
                                                "or OUT.h5 for one file")
    convert.add_argument("--size", type=image_size, default=64, help="side of the square images in px (8 to 4096)")
    convert.add_argument("--resize-mode", default="center-crop", choices=["center-crop", "pad"])
    convert.add_argument("--overwrite", action="store_true", help="replace OUT (a file and its .json summary, or a "
                                                                  "pair's folder) when it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "convert" and is_pair_output(args.out):
            return _convert_pair(args)
        if args.command == "convert":
            check_output(args.out, args.overwrite)  # before reading anything
        source = _open(args)
        if args.command == "inspect":
            return _inspect(args, source)
        return _convert(args, source)
    except OSError as error:  # writing the output (disk full, read-only, permission): name the file the OS did not
        error.filename = error.filename or str(args.out if args.command == "convert" else args.source)
        raise


def _inspect(args: argparse.Namespace, source) -> int:
    report = inspect_source(source, split=args.split, caption_template=args.caption_template)
    out = args.out or Path("outputs") / "inspect" / Path(args.source).resolve().stem
    grid = out / "grid.png"
    report["grid"] = str(grid)
    report["grid_ids"] = sample_grid(source, grid, args.samples, seed=args.seed, caption_template=args.caption_template)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report)
    return 0


def _print_report(report: dict) -> None:
    print(f"{report['path']}: format {report['format']}, split {report['split']}, "
          f"{report['num_records']} records, {report['num_skipped']} skipped")
    for reason, count in report["skipped_by_reason"].items():
        print(f"  skipped {count}: {reason}")
    if report["moved_to_train"]:
        print(f"  {report['moved_to_train']} row(s) moved to train: pixel-identical to training photos under other ids")
    words = report["caption_words"]
    if words:
        print(f"caption words: min {words['min']} median {words['median']} mean {words['mean']} "
              f"p95 {words['p95']} max {words['max']}; with attributes: mean {report['model_caption_words']['mean']}")
    for name, info in report["attributes"].items():
        top = ", ".join(f"{value} {count}" for value, count in list(info["top"].items())[:6])
        print(f"  {name} ({info['distinct']} values, {info['present']} present): {top}")
    print(f"grid of samples: {report['grid']}")


def _convert(args: argparse.Namespace, source) -> int:
    result = convert_source(source, args.out, resolution=args.size, resize_mode=args.resize_mode,
                            caption_template=args.caption_template, skip_bad_records=not args.strict, overwrite=args.overwrite)
    write_result(result, result_path(args.out))
    print(json.dumps(result.__dict__))
    return 0



def _convert_pair(args: argparse.Namespace) -> int:
    """Both splits into the folder OUT; a rerun after a kill keeps a split already finished with the same options."""
    if args.split != "all":
        raise OutputError(f"{args.out}: a folder gets both splits; to convert only --split {args.split}, name a file "
                          f"({args.out}_{args.split}.h5)")
    check_pair_output(args.out, args.overwrite)  # before reading anything
    settings = {key: value for key, value in vars(args).items() if key not in ("command", "out", "overwrite", "size",
                                                                               "resize_mode", "caption_template")}
    settings["source"] = str(Path(args.source).resolve())

    def open_split(split: str):
        return _open(argparse.Namespace(**{**vars(args), "split": split}))

    result = convert_pair(open_split, args.out, settings, resolution=args.size, resize_mode=args.resize_mode,
                          caption_template=args.caption_template, skip_bad_records=not args.strict,
                          overwrite=args.overwrite)
    print(json.dumps(result.__dict__, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
