"""`python -m fashiongen.submission validate DIR [--captions CAPTIONS] [--split SPLIT]`: exit 0 when the set is valid,
1 with its problems (at most MAX_PRINTED_PROBLEMS lines), 2 with one `error:` line when it cannot be checked."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArgumentParser, command, input_errors
from .captions import read_caption_list
from .format import HEADER_FILE, LINES_FILE, MAX_PRINTED_PROBLEMS, SubmissionError
from .validation import validate_submission


@command(input_errors(OSError))
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fashiongen.submission", description="Check a submission set.")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a submission folder; exit 0 when valid, 1 when not")
    validate.add_argument("dir", help="the submission folder")
    validate.add_argument("--captions", help="caption list (JSONL or dataset source) every caption of which must be present")
    validate.add_argument("--split", help="split of a dataset source (default: the source's own: all of one .h5 file, "
                                          "else validation)")
    options = parser.parse_args(argv)
    out_dir = Path(options.dir)
    if not out_dir.is_dir():
        raise SubmissionError(f"{out_dir} is not a folder")
    captions = read_caption_list(options.captions, options.split) if options.captions else None
    problems = validate_submission(out_dir, captions)
    if problems:
        for problem in problems[:MAX_PRINTED_PROBLEMS]:
            print(problem)
        if len(problems) > MAX_PRINTED_PROBLEMS:
            print(f"... and {len(problems) - MAX_PRINTED_PROBLEMS} more")
        return 1
    header = json.loads((out_dir / HEADER_FILE).read_text(encoding="utf-8"))
    count = sum(1 for line in (out_dir / LINES_FILE).read_text(encoding="utf-8").splitlines() if line.strip())
    print(f"OK: {count} images for {header['num_captions']} captions at {header['resolution']}x{header['resolution']}")
    return 0


__all__ = ["main"]
