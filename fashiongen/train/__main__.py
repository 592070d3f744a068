"""Export a checkpoint's EMA weights as a model the sampling pipeline loads, or publish one as a complete
model folder (weights, config, model card with its evaluation, and the critic that judged it).

    python -m fashiongen.train export runs/001-small64 [OUT] [--dtype float16]
    python -m fashiongen.train publish runs/001-default64 my-model/ --dtype float16 \\
        --report docs/default-model/report.json --notes docs/default-model/card-notes.md
    python -m fashiongen.train publish runs/001-default64 fashiongen/pretrained --overwrite ...   # the shipped model

OUT must be new, empty, or a model folder of ours (model.json or pipeline.json), which is replaced
atomically; anything else (a file, a folder of other files) is refused unless --overwrite. The
package's own default model (fashiongen/pretrained) is replaced only with --overwrite, and publish
has no default OUT, so it is never replaced by accident.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import ConfigError
from ..utils import DISK_ERRORS
from .checkpoint import resolve_resume
from .export import DTYPES, ModelFileError, check_output_dir, load_checkpoint_model, replacing_directory, write_model_files


def export_checkpoint(checkpoint: Path, out: Path, dtype: str = "float32", overwrite: bool = False,
                      protected: tuple[Path, ...] = ()) -> Path:
    """Export a checkpoint's EMA weights with the same model.json a finished run writes."""
    check_output_dir(out, overwrite, protected)  # before loading anything
    model, info = load_checkpoint_model(checkpoint)
    with replacing_directory(out, overwrite, protected) as temporary:
        write_model_files(model, {k: v for k, v in info.items() if k != "weights"}, temporary, dtype)
    return out


def publish(model: Path, out: Path, dtype: str = "float16", critic: Path | None = None, report: Path | None = None,
            notes: Path | None = None, overwrite: bool = False) -> Path:
    """A model folder a user loads by path (or by default, in fashiongen/pretrained/): the pipeline's files with the
    headline numbers of an evaluate.py report in model.json and the card, the critic, and extra card notes."""
    from ..evaluation.report import headline_metrics
    from ..pipeline import DEFAULT_MODEL_DIR, FashionGenPipeline

    check_output_dir(out, overwrite, (DEFAULT_MODEL_DIR,))  # before loading anything
    pipe = FashionGenPipeline.from_pretrained(model)
    if report is not None:
        try:
            pipe.stages[0].info["metrics"] = headline_metrics(json.loads(report.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelFileError(f"{report}: not a readable evaluate.py report.json ({error})") from None
    text = notes.read_text(encoding="utf-8") if notes is not None else ""
    return pipe.save_pretrained(out, dtype=dtype, critic=critic, notes=text, overwrite=overwrite)


def _one_line(error: BaseException) -> str:
    """An error as the one line the CLI prints: OSError as 'PATH: reason', disk errors named as such."""
    if isinstance(error, OSError) and error.errno is not None:
        reason = DISK_ERRORS.get(error.errno, error.strerror or str(error))
        return f"{error.filename or ''}: {reason}" if error.filename else reason
    return " ".join(str(error).split())


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
    export.add_argument("--overwrite", action="store_true", help="replace OUT even when it is not a model folder of ours")
    release = commands.add_parser("publish", help="a complete model folder: weights, model card, metrics, critic")
    release.add_argument("model", help="a run, checkpoint, export or saved pipeline")
    release.add_argument("out", help=f"output directory (the package's default model is {DEFAULT_MODEL_DIR}: "
                                     "replacing it needs --overwrite)")
    release.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    release.add_argument("--critic", default=str(BUNDLED_CRITIC), help="critic to ship beside it ('none': no critic)")
    release.add_argument("--report", help="evaluate.py report.json whose headline numbers go into the card")
    release.add_argument("--notes", help="markdown file added to the model card")
    release.add_argument("--overwrite", action="store_true",
                         help="replace OUT even when it is not a model folder of ours, or is the package's default model")
    options = parser.parse_args(argv)
    try:
        if options.command == "publish":
            critic = None if options.critic.lower() == "none" else Path(options.critic)
            print(publish(Path(options.model), Path(options.out), options.dtype, critic,
                          Path(options.report) if options.report else None, Path(options.notes) if options.notes else None,
                          overwrite=options.overwrite))
            return 0
        checkpoint = resolve_resume(options.checkpoint, "", "")
        out = Path(options.out) if options.out else checkpoint.parent.parent / f"export-{checkpoint.name}"
        print(export_checkpoint(checkpoint, out, options.dtype, options.overwrite, (DEFAULT_MODEL_DIR,)))
    except (ModelFileError, ConfigError, OSError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
