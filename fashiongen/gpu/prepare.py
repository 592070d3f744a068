"""`prepare`: build what travels to a lent GPU (in an ignored folder, `.gpu/`) and make the checkout small enough.

    .gpu/kit.json      what was built, from what, with its checks (the run refuses a folder without it)
    .gpu/config.yaml   the training config, resolved (the run points its data and encoder at the kit)
    .gpu/data/         the photos at the model resolution (photos.py)
    .gpu/encoder/      the caption encoder cut to our captions' tokens (encoder.py)
    .gpu/wheels/       what the GPU machine lacks: diffusers (our UNet is diffusers') and importlib_metadata
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..config import Config, save_config
from ..data import FashionDataset
from ..errors import UserError
from .encoder import check_cut_encoder, cut_encoder, pack_weights
from .photos import compare_sources, pack, rebuild
from .travel import LIMIT_MIB, MIB, stage_out, stageable, travelling_files

KIT_FORMAT, KIT_VERSION, KIT_INFO = "fashiongen-gpu-kit", 1, "kit.json"
WHEELS = ("diffusers", "importlib_metadata")  # not on the GPU machine; their other needs are (device README)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


class KitError(UserError):
    """A kit folder that is missing, foreign, or too big to travel."""


def all_captions(config: Config) -> list[str]:
    """Every caption a run of `config` encodes: both splits', the validation prompts' and the empty caption."""
    captions = [""]
    for split in ("train", "validation"):
        dataset = FashionDataset.from_config(config.data, seed=config.seed, split=split)
        captions += [dataset.caption(index) for index in range(len(dataset))]
    return list(dict.fromkeys(captions + list(config.train.validation_prompts)))


def download_wheels(out: Path) -> list[str]:
    """pip-download the wheels the GPU machine lacks, at the versions installed here (Python 3.12, x86-64)."""
    out.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *platforms, "-d", str(out), *pins]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise KitError(f"pip download {' '.join(pins)} failed ({last}); without diffusers the GPU run cannot build "
                       "the UNet: retry where pip reaches PyPI, or pass --no-wheels if the GPU machine has it")
    return sorted(path.name for path in out.glob("*.whl"))


def build_kit(config: Config, kit: Path, wheels: bool, sample: int = 256) -> dict[str, Any]:
    """Write the kit folder (replacing a previous one); returns kit.json's content."""
    if kit.exists():
        if any(kit.iterdir()) and not (kit / KIT_INFO).is_file():
            raise KitError(f"{kit}: exists and is not a kit folder (no {KIT_INFO}); move it away or pass another --kit")
        shutil.rmtree(kit)
    kit.mkdir(parents=True)
    started = time.perf_counter()
    data = pack(config.data, kit / "data")
    with_scratch = kit / "data" / "check.h5"
    data["checked"] = compare_sources(config.data, rebuild(kit / "data", with_scratch), config.seed, sample)
    with_scratch.unlink()
    captions = all_captions(config)
    cut = cut_encoder(config.text, captions, kit / "encoder")
    check = check_cut_encoder(config.text, kit / "encoder", captions, cut.pop("old_ids"), sample)
    encoder = {"encoder": config.text.encoder, **cut, **check, **pack_weights(kit / "encoder")}
    info = {"format": KIT_FORMAT, "version": KIT_VERSION, "id": uuid.uuid4().hex[:12], "config": "config.yaml",
            "name": config.name, "model": config.model.name, "data_source": config.data.source, "data": data, "encoder": encoder, "captions": len(captions),
            "wheels": download_wheels(kit / "wheels") if wheels else [], "seconds": round(time.perf_counter() - started, 1)}
    save_config(config, kit / "config.yaml")
    (kit / KIT_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def read_kit(kit: Path) -> dict[str, Any]:
    """kit.json of a kit folder; a missing or foreign folder is one KitError."""
    path = kit / KIT_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{kit}: no {KIT_INFO}; run `python -m fashiongen.gpu prepare` first (and carry its folder)") from None
    except (OSError, ValueError) as error:
        raise KitError(f"{path}: not a kit description ({error})") from None
    if not isinstance(info, dict) or info.get("format") != KIT_FORMAT or info.get("version") != KIT_VERSION:
        raise KitError(f"{path}: not a {KIT_FORMAT} version {KIT_VERSION} description")
    return info


def plan_travel(repo: Path, kit: Path) -> dict[str, Any]:
    """What would travel once the stageable files are out: its size, the files to stage and the carry list."""
    carry = [str(kit.resolve().relative_to(repo.resolve()))]
    staged = stageable(repo)
    files = travelling_files(repo, carry)
    travelling = sum(size for name, size in files.items() if name not in set(staged))
    return {"carry": carry, "travelling_mib": round(travelling / MIB, 2), "staged": staged,
            "staged_mib": round(sum(files.get(name, 0) for name in staged) / MIB, 2), "limit_mib": LIMIT_MIB}


def stage(repo: Path, stash: Path, plan: dict[str, Any]) -> None:
    """Refuse above the limit (nothing moved), else move the staged files out."""
    if plan["travelling_mib"] > LIMIT_MIB:
        raise KitError(f"{plan['travelling_mib']} MiB would travel, over the {LIMIT_MIB} MiB limit "
                       "(untracked files count too: remove or ignore what the run does not need); nothing staged")
    stage_out(repo, stash, plan["staged"])


__all__ = ["KIT_INFO", "KitError", "all_captions", "build_kit", "download_wheels", "plan_travel", "read_kit", "stage"]
