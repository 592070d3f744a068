"""Export a checkpoint's EMA weights as a model the sampling pipeline loads, or publish one as a complete
model folder (weights, config, model card with its evaluation, and the critic that judged it).

    python -m fashiongen.train export runs/001-small64 [OUT] [--dtype float16]
    python -m fashiongen.train publish runs/001-default64 [fashiongen/pretrained] --dtype float16 \\
        --report docs/default-model/report.json --notes docs/default-model/card-notes.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import ConfigError
from .checkpoint import resolve_resume
from .export import DTYPES, ModelFileError, load_checkpoint_model, replace_directory, temporary_directory, write_model_files


def export_checkpoint(checkpoint: Path, out: Path, dtype: str = "float32") -> Path:
    """Export a checkpoint's EMA weights with the same model.json a finished run writes."""
    model, info = load_checkpoint_model(checkpoint)
    temporary = temporary_directory(out)
    write_model_files(model, {k: v for k, v in info.items() if k != "weights"}, temporary, dtype)
    return replace_directory(temporary, out)


def publish(model: Path, out: Path, dtype: str = "float16", critic: Path | None = None, report: Path | None = None,
            notes: Path | None = None) -> Path:
    """A model folder a user loads by path (or by default, in fashiongen/pretrained/): the pipeline's files with the
    headline numbers of an evaluate.py report in model.json and the card, the critic, and extra card notes."""
    from ..evaluation.report import headline_metrics
    from ..pipeline import FashionGenPipeline

    pipe = FashionGenPipeline.from_pretrained(model)
    if report is not None:
        try:
            pipe.stages[0].info["metrics"] = headline_metrics(json.loads(report.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelFileError(f"{report}: not a readable evaluate.py report.json ({error})") from None
    text = notes.read_text(encoding="utf-8") if notes is not None else ""
    return pipe.save_pretrained(out, dtype=dtype, critic=critic, notes=text)


def main(argv: list[str] | None = None) -> int:
    from ..evaluation.suite import BUNDLED_CRITIC
    from ..pipeline import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(prog="python -m fashiongen.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a checkpoint's EMA model (safetensors + model.json)")
    export.add_argument("checkpoint", help="a checkpoint directory or a run directory (its latest checkpoint)")
    export.add_argument("out", nargs="?", help="output directory (default: RUN/export-step_NNNNNN)")
    export.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    release = commands.add_parser("publish", help="a complete model folder: weights, model card, metrics, critic")
    release.add_argument("model", help="a run, checkpoint, export or saved pipeline")
    release.add_argument("out", nargs="?", default=str(DEFAULT_MODEL_DIR),
                         help=f"output directory (default: the package's default model, {DEFAULT_MODEL_DIR})")
    release.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    release.add_argument("--critic", default=str(BUNDLED_CRITIC), help="critic to ship beside it ('none': no critic)")
    release.add_argument("--report", help="evaluate.py report.json whose headline numbers go into the card")
    release.add_argument("--notes", help="markdown file added to the model card")
    options = parser.parse_args(argv)
    if options.command == "publish":
        try:
            critic = None if options.critic.lower() == "none" else Path(options.critic)
            print(publish(Path(options.model), Path(options.out), options.dtype, critic,
                          Path(options.report) if options.report else None, Path(options.notes) if options.notes else None))
        except (ModelFileError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        checkpoint = resolve_resume(options.checkpoint, "", "")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(options.out) if options.out else checkpoint.parent.parent / f"export-{checkpoint.name}"
    print(export_checkpoint(checkpoint, out, options.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
