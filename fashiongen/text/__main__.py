"""Encode captions from the command line and report shapes, token counts, truncation and cache hits.

    python -m fashiongen.text encode "red silk dress" "black leather boots" [--json]
    python -m fashiongen.text encode --file captions.txt --set text.max_length=16 --config configs/small64.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..config import load_config
from .encoder import CaptionEncoder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashiongen.text", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode", help="encode captions and print what came out")
    encode.add_argument("captions", nargs="*", help="captions to encode")
    encode.add_argument("--file", type=Path, help="a text file with one caption per line")
    encode.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    encode.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. text.max_length=16")
    encode.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args(argv)

    captions = list(args.captions)
    if args.file is not None:
        captions += args.file.read_text(encoding="utf-8").splitlines()
    if not captions:
        parser.error("give captions as arguments or with --file")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    encoder = CaptionEncoder(load_config(args.config, args.set).text)
    text = encoder.encode(captions)
    report = {
        "identity": encoder.identity,
        "num_captions": len(captions),
        "token_states": list(text.token_states.shape),
        "mask": list(text.mask.shape),
        "pooled": list(text.pooled.shape),
        "lengths": text.lengths.tolist(),
        "num_truncated": encoder.num_truncated,
        "cache_hits": encoder.cache.hits if encoder.cache is not None else None,
        "cache_path": str(encoder.cache.path) if encoder.cache is not None else None,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
