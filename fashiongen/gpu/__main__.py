"""`python -m fashiongen.gpu prepare|restore|run|unpack`: the one-call GPU kit (docs/gpu.md).

    python -m fashiongen.gpu prepare                 # here: .gpu/ built, docs and weights staged out; last line JSON
    (the lending tool, carrying .gpu)  pip install --target /tmp/site .gpu/wheels/*.whl;
        PYTHONPATH=/tmp/site python3 -m fashiongen.gpu run --minutes 9 --out $OUT
    python -m fashiongen.gpu restore                 # here, always after the call (also after a failed one)
    python -m fashiongen.gpu unpack FOLDER           # here: runs/gpu-NNN, then evaluate.py and release
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import load_config
from ..errors import ArgumentParser, UsageError, command, input_errors
from .travel import default_stash, repo_root, restore

DEVICE_COMMAND = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "
                  "/tmp/site {kit}/wheels/*.whl && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 -m fashiongen.gpu "
                  "run --kit {kit} --minutes 9 --out $OUT")


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m fashiongen.gpu", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    prepare = verbs.add_parser("prepare", help="build .gpu/ and stage the weights and docs out of the checkout")
    prepare.add_argument("--config", default="configs/default64.yaml")
    prepare.add_argument("--out", "--kit", dest="kit", default=".gpu", help="the kit folder (ignored by git)")
    prepare.add_argument("--stash", help="where staged files wait (default ../.REPO-gpu-staged)")
    prepare.add_argument("--no-wheels", action="store_true", help="do not pip-download diffusers for the GPU machine")
    prepare.add_argument("--no-stage", action="store_true", help="build and measure only; move nothing")
    prepare.add_argument("--check-sample", type=int, default=256, help="records per split and captions to compare")
    prepare.add_argument("overrides", nargs="*", help="key=value config overrides")
    restore_ = verbs.add_parser("restore", help="put every staged file back")
    restore_.add_argument("--stash")
    run = verbs.add_parser("run", help="on the GPU machine: tests, benchmarks, training")
    run.add_argument("--kit", default=".gpu")
    run.add_argument("--out", required=True)
    run.add_argument("--work", default="/tmp/fashiongen-gpu", help="scratch folder (data, encoder, runs)")
    run.add_argument("--minutes", type=float, default=9.0)
    run.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--bench-models", default="unet-compact,unet-small")
    run.add_argument("--bench-steps", type=int, default=100)
    run.add_argument("--no-compile", action="store_true")
    run.add_argument("--no-tests", action="store_true")
    unpack = verbs.add_parser("unpack", help="here: join the returned pieces into a model folder")
    unpack.add_argument("folder")
    unpack.add_argument("--to", help="output model folder (default runs/gpu-NNN)")
    return parser


def _prepare(args) -> int:
    from .prepare import build_kit, plan_travel, stage

    repo = repo_root(Path.cwd())
    kit = Path(args.kit).resolve()
    if repo.resolve() not in kit.parents:
        raise UsageError(f"--out {args.kit}: the kit must be inside the checkout {repo} to travel")
    config = load_config([args.config], args.overrides)
    info = build_kit(config, kit, wheels=not args.no_wheels, sample=args.check_sample)
    plan = plan_travel(repo, kit)
    if not args.no_stage:
        stage(repo, Path(args.stash) if args.stash else default_stash(repo), plan)
    carry = plan["carry"]
    print(json.dumps({**plan, "staged": len(plan["staged"]), "kit": info["id"], "moved": not args.no_stage,
                      "max_abs_state_difference": info["encoder"]["max_abs_state_difference"],
                      "command": DEVICE_COMMAND.format(kit=carry[0])}))
    return 0


def _run(args) -> int:
    from .run import Options, run_kit

    options = Options(kit=Path(args.kit), out=Path(args.out), work=Path(args.work), minutes=args.minutes,
                      device=args.device, batch_size=args.batch_size,
                      bench_models=tuple(m for m in args.bench_models.split(",") if m), bench_steps=args.bench_steps,
                      compile=not args.no_compile, tests=not args.no_tests)
    results = run_kit(options)
    print(json.dumps({"training": results.get("training"), "benchmarks": results.get("benchmarks")}, default=str))
    return 0


def _unpack(args) -> int:
    from .unpack import next_run_folder, unpack

    out = Path(args.to) if args.to else next_run_folder(Path("runs"))
    unpack(Path(args.folder), out)
    print(f"model folder: {out}\n"
          f"evaluate it beside the shipped model on the 467 validation captions:\n"
          f"  python evaluate.py --model {out} --captions ../shared/data/fashion-products --split validation "
          f"--num-images 467 --out eval/{out.name}\n"
          f"  python evaluate.py --model fashiongen/pretrained --captions ../shared/data/fashion-products "
          f"--split validation --num-images 467 --out eval/shipped\n"
          f"and if it scores better, publish it: python -m fashiongen release {out} PUBLISHED --report eval/{out.name}/report.json")
    return 0


@command(input_errors(OSError))
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "restore":
        repo = repo_root(Path.cwd())
        names = restore(repo, Path(args.stash) if args.stash else default_stash(repo))
        print(json.dumps({"restored": len(names)}))
        return 0
    return {"prepare": _prepare, "run": _run, "unpack": _unpack}[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
