"""Publish a model as a complete folder a user loads by path: the pipeline's files, the headline numbers of an
evaluate.py report in model.json and the model card, the critic that judged it, and extra card notes.

    python -m fashiongen.release runs/001-default64 my-model/ --dtype float16 \\
        --report docs/default-model/report.json --notes docs/default-model/card-notes.md
    python -m fashiongen.release runs/001-default64 fashiongen/pretrained --overwrite ...   # the shipped model
    python -m fashiongen.release fashiongen/pretrained fashiongen/pretrained --superres runs/002-upsampler256 --overwrite
    python -m fashiongen.release fashiongen/pretrained fashiongen/pretrained --student runs/004-distill64 --overwrite

OUT must be new, empty, or a model folder of ours (model.json or pipeline.json), which is replaced atomically;
anything else (a file, a folder of other files) is refused unless --overwrite. The package's own default model
(fashiongen/pretrained) and GAN (fashiongen/pretrained-gan) are replaced only with --overwrite, and there is no default OUT, so it is never replaced by
accident. (`python -m fashiongen.train publish` is the same command.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .evaluation.report import headline_metrics
from .models.files import BUNDLED_CRITIC, BUNDLED_GAN, DEFAULT_MODEL_DIR, DTYPES, ModelFileError, check_output_dir
from .pipeline import FashionGenPipeline
from .pipeline.publishing import carried_bases
from .errors import ArgumentParser, command, input_errors
from .utils import NotRegularFile, open_regular

MAX_REPORT_BYTES = 64 * 2**20  # evaluate.py's report.json is a few hundred KB


def publish(model: Path, out: Path, dtype: str = "float16", critic: Path | None = None, report: Path | None = None,
            notes: Path | None = None, overwrite: bool = False, superres: tuple[Path, ...] = (),
            student: Path | None = None, student_report: Path | None = None) -> Path:
    """A model folder a user loads by path (or by default, in fashiongen/pretrained/); `superres`: stages (an upsampler)
    the folder carries after the model's own; `student`: a few-step student of the model (a distillation run or its
    export), carried as the base model "student" (`from_pretrained(out, base="student")`). The bases a saved `model`
    already offers are carried too; `student_report`: its evaluate.py report, whose headline numbers its card records
    (the app weighs a student against its teacher by them)."""
    check_output_dir(out, overwrite, (DEFAULT_MODEL_DIR, BUNDLED_GAN))  # before loading anything
    pipe = FashionGenPipeline.from_pretrained(model, superres=superres)
    bases = carried_bases(pipe.bases, student)
    if report is not None:
        pipe.stages[0].info = pipe.stages[0].info.replace(metrics=_headline(report))
    if student_report is not None:
        if "student" not in bases:
            raise ModelFileError(f"--student-report {student_report}: the folder carries no student to record it for")
        bases["student"].info = bases["student"].info.replace(metrics=_headline(student_report))
    text = notes.read_text(encoding="utf-8") if notes is not None else ""
    return pipe.save_pretrained(out, dtype=dtype, critic=critic, notes=text, overwrite=overwrite, bases=bases)


def _headline(report: Path) -> dict[str, str]:
    """The card's numbers from an evaluate.py report.json; ModelFileError naming the file for anything else (a random
    or non-UTF-8 file, JSON that is not a report, a FIFO or a folder)."""
    try:
        with open_regular(report) as file:
            raw = file.read(MAX_REPORT_BYTES + 1)
        if len(raw) > MAX_REPORT_BYTES:
            raise ValueError(f"over {MAX_REPORT_BYTES // 2**20} MiB")
        content = json.loads(raw.decode("utf-8"))
        if not isinstance(content, dict) or not all(isinstance(content.get(key, {}), dict) for key in ("metrics", "meta")):
            raise ValueError("expected a JSON object with 'metrics' and 'meta' objects")
        return headline_metrics(content)
    except NotRegularFile as error:
        raise ModelFileError(f"{report}: {error.reason}") from None
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as error:
        raise ModelFileError(f"{report}: not a readable evaluate.py report.json ({error})") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a run, checkpoint, export or saved pipeline")
    parser.add_argument("out", help=f"output directory (the package's models are {DEFAULT_MODEL_DIR} and {BUNDLED_GAN}: "
                                    "replacing either needs --overwrite)")
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    parser.add_argument("--critic", default=str(BUNDLED_CRITIC), help="critic to ship beside it ('none': no critic)")
    parser.add_argument("--report", help="evaluate.py report.json whose headline numbers go into the card")
    parser.add_argument("--notes", help="markdown file added to the model card")
    parser.add_argument("--superres", action="append", default=[],
                        help="a stage the folder carries after the model (an upsampler's run or export; repeatable)")
    parser.add_argument("--student", help="a few-step student of the model (a distillation run or export), carried as "
                                          "its base model 'student'")
    parser.add_argument("--student-report", help="the student's evaluate.py report.json, whose headline numbers go "
                                                 "into its card")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT even when it is not a model folder of ours, or is a model shipped in the package")


def run(options: argparse.Namespace) -> int:
    """Publish as the parsed command line says; print the folder. Errors propagate to the command's wrapper."""
    critic = None if options.critic.lower() == "none" else Path(options.critic)
    print(publish(Path(options.model), Path(options.out), options.dtype, critic,
                  Path(options.report) if options.report else None, Path(options.notes) if options.notes else None,
                  overwrite=options.overwrite, superres=tuple(map(Path, options.superres)),
                  student=Path(options.student) if options.student else None,
                  student_report=Path(options.student_report) if options.student_report else None))
    return 0


@command(input_errors(OSError))
def main(argv: list[str] | None = None) -> int:
    """A model, report or output folder that cannot be used: one `error:` line, exit 2."""
    parser = ArgumentParser(prog="python -m fashiongen.release", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))

if __name__ == "__main__":
    sys.exit(main())
