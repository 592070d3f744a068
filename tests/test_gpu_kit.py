"""The GPU kit (python -m fashiongen.gpu) rehearsed on CPU: staging out of a real git checkout and restoring it byte
for byte, the travelling size counted as the lending tool counts it, the photos and the cut caption encoder giving
back what they were made from, the weights in pieces, and the whole kit end to end on tiny data and a tiny model
(prepare, run --device cpu, unpack, sample, evaluate, publish), with the refusals of hostile input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_garment_set
from fashiongen.config import load_config
from fashiongen.gpu.pieces import PiecesError, join_pieces, write_pieces
from fashiongen.gpu.photos import KitDataError, compare_sources, pack, rebuild
from fashiongen.gpu.prepare import KitError, plan_travel, stage
from fashiongen.gpu.travel import MIB, TravelError, restore, stage_out, stageable, travelling_files

REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)


def checkout(root: Path) -> Path:
    """A git checkout with what the kit stages (weights under fashiongen/, docs) and what it leaves."""
    repo = root / "repo"
    files = {"fashiongen/pretrained/model.safetensors": 300_000, "fashiongen/pretrained/model.json": 900,
             "docs/pictures/a.png": 120_000, "docs/guide.md": 2_000, "README.md": 500, "tests/fixtures/x.png": 4_000, "tests/test_x.py": 700}
    for name, size in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(os.urandom(size))
    (repo / ".gitignore").write_text(".gpu/\nbuild/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def snapshot(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in repo.rglob("*") if p.is_file() and ".git" not in p.relative_to(repo).parts}


def test_the_travelling_size_counts_tracked_untracked_and_carried_files_only(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    (repo / "notes.txt").write_bytes(b"n" * 1000)  # untracked, not ignored: travels
    (repo / "build").mkdir()
    (repo / "build" / "big.bin").write_bytes(b"b" * 50_000)  # ignored: stays unless carried
    (repo / ".gpu").mkdir()
    (repo / ".gpu" / "kit.bin").write_bytes(b"k" * 7_000)
    files = travelling_files(repo, [".gpu"])
    assert files["notes.txt"] == 1000 and files[".gpu/kit.bin"] == 7000 and "build/big.bin" not in files
    assert sum(files.values()) == sum((repo / name).stat().st_size for name in files)
    assert stageable(repo) == ["docs/guide.md", "docs/pictures/a.png", "fashiongen/pretrained/model.safetensors",
                               "tests/fixtures/x.png"]
    plan = plan_travel(repo, repo / ".gpu")
    staged_bytes = 300_000 + 120_000 + 2_000 + 4_000
    assert plan["carry"] == [".gpu"] and plan["travelling_mib"] == round((sum(files.values()) - staged_bytes) / MIB, 2)


def test_staging_out_and_restoring_is_byte_exact_idempotent_and_survives_a_kill(tmp_path: Path) -> None:
    repo, stash = checkout(tmp_path), tmp_path / "stash"
    before = snapshot(repo)
    assert restore(repo, stash) == []  # nothing staged: nothing to do
    names = stageable(repo)
    stage_out(repo, stash, names)
    assert not any((repo / name).exists() for name in names)
    assert sum(travelling_files(repo, []).values()) < 10_000  # what is left travels
    assert sorted(restore(repo, stash)) == sorted(names) and snapshot(repo) == before and not stash.exists()
    assert restore(repo, stash) == []
    # killed half-way: the first file recorded and moved, the second recorded, not yet moved
    stage_out(repo, stash, names[:1])
    manifest = json.loads((stash / "manifest.json").read_text())
    manifest["files"][names[1]] = hashlib.sha256((repo / names[1]).read_bytes()).hexdigest()
    (stash / "manifest.json").write_text(json.dumps(manifest))
    assert sorted(restore(repo, stash)) == sorted(names[:2]) and snapshot(repo) == before


def test_restore_refuses_a_stash_of_another_checkout_or_with_changed_bytes(tmp_path: Path) -> None:
    repo, stash = checkout(tmp_path), tmp_path / "stash"
    stage_out(repo, stash, ["docs/guide.md"])
    with pytest.raises(TravelError, match="not .*pass --stash"):
        restore(tmp_path, stash)
    (stash / "files" / "docs" / "guide.md").write_bytes(b"changed")
    with pytest.raises(TravelError, match="bytes differ"):
        restore(repo, stash)
    assert not (repo / "docs" / "guide.md").exists()  # nothing wrong was put back


def test_over_the_limit_nothing_is_staged(tmp_path: Path) -> None:
    repo, stash = checkout(tmp_path), tmp_path / "stash"
    (repo / ".gpu").mkdir()
    with (repo / ".gpu" / "photos.bin").open("wb") as handle:  # sparse: 61 MiB counted, none written
        handle.truncate(61 * MIB)
    plan = plan_travel(repo, repo / ".gpu")
    assert plan["travelling_mib"] > 60
    with pytest.raises(KitError, match="over the 60.0 MiB limit"):
        stage(repo, stash, plan)
    assert not stash.exists() and (repo / "fashiongen/pretrained/model.safetensors").exists()


def test_pieces_join_back_and_refuse_truncated_mixed_or_foreign_ones(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(40_000))
    (model / "model.json").write_text('{"family": "diffusion"}')
    out = tmp_path / "out"
    manifest = write_pieces(model, out, "run-a", step=7)
    joined = join_pieces(out, tmp_path / "joined", run_id="run-a")
    assert joined["step"] == 7 and (tmp_path / "joined/model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    with pytest.raises(PiecesError, match="not run-b"):
        join_pieces(out, tmp_path / "j2", run_id="run-b")
    piece = out / manifest["pieces"][0]["name"]
    piece.write_bytes(piece.read_bytes()[:-10])  # truncated
    with pytest.raises(PiecesError, match="do not match"):
        join_pieces(out, tmp_path / "j3")
    other = tmp_path / "other"
    write_pieces(model, other, "run-a", step=8)
    (model / "model.safetensors").write_bytes(os.urandom(40_000))
    write_pieces(model, out, "run-a", step=9)
    (out / "pieces.json").write_bytes((other / "pieces.json").read_bytes())  # a manifest of another save
    with pytest.raises(PiecesError):
        join_pieces(out, tmp_path / "j4")
    with pytest.raises(PiecesError, match="no pieces.json"):
        join_pieces(tmp_path / "model", tmp_path / "j5")


def test_packed_photos_give_back_the_pixels_captions_and_split_of_the_source(tmp_path: Path) -> None:
    source = write_garment_set(tmp_path / "garments", 24)
    config = load_config([], [f"data.source={source}", "data.resolution=32", "data.val_fraction=0.25"])
    facts = pack(config.data, tmp_path / "packed")
    assert facts["records"] == 24 and (tmp_path / "packed" / "photos.bin").stat().st_size == facts["photos_bytes"]
    rebuilt = rebuild(tmp_path / "packed", tmp_path / "data.h5")
    checked = compare_sources(config.data, rebuilt, config.seed)
    assert checked["train"] + checked["validation"] == 24 and checked["validation"] > 0
    blob = tmp_path / "packed" / "photos.bin"
    blob.write_bytes(blob.read_bytes()[:-100])
    with pytest.raises(KitDataError, match="truncated or from another kit"):
        rebuild(tmp_path / "packed", tmp_path / "again.h5")


@pytest.mark.slow
def test_the_cut_encoder_tokenises_exactly_and_stays_within_tolerance(tmp_path: Path) -> None:
    from fashiongen.gpu.encoder import (STATE_TOLERANCE, EncoderCutError, check_cut_encoder, cut_encoder, pack_weights,
                                        unpack_weights)

    config = load_config([], [])
    captions = ["", "red floral summer dress", "men's navy check shirt", "Women's white skirts, casual, summer 2011"]
    cut = cut_encoder(config.text, captions, tmp_path / "cut")
    assert cut["tokens_kept"] < 100 and cut["tokens_full"] == 30522
    check = check_cut_encoder(config.text, tmp_path / "cut", captions, cut["old_ids"])
    assert 0 < check["max_abs_state_difference"] <= STATE_TOLERANCE
    packed = pack_weights(tmp_path / "cut")
    unpack_weights(tmp_path / "cut", tmp_path / "loadable", packed)
    again = check_cut_encoder(config.text, tmp_path / "loadable", captions, cut["old_ids"])
    assert again.pop("cut_identity").split("-")[1:] == check.pop("cut_identity").split("-")[1:]  # same bytes, other folder
    assert again == check
    with pytest.raises(EncoderCutError, match="splits 'blue jeans'"):  # a token the cut vocabulary lacks
        check_cut_encoder(config.text, tmp_path / "loadable", ["blue jeans"], cut["old_ids"])
    with pytest.raises(EncoderCutError, match="not the ones"):
        unpack_weights(tmp_path / "cut", tmp_path / "other", {**packed, "weights_sha256": "0" * 64})


def kit_command(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fashiongen.gpu", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_the_kit_end_to_end_on_cpu(tmp_path: Path) -> None:
    """prepare -> run --device cpu -> unpack -> sample, evaluate, publish; restore exact; hostile inputs refused."""
    repo = checkout(tmp_path)
    source = write_garment_set(tmp_path / "garments", 40)
    (repo / "tiny.yaml").write_text(
        f"name: tiny\ndata: {{source: {source}, resolution: 32, val_fraction: 0.25}}\n"
        "model: {name: unet-tiny, attributes: [category, gender, colour, season]}\n"
        "train: {batch_size: 8, warmup_steps: 2, learning_rate: 0.001, log_every: 1, validation_prompts: [red dress],"
        " validation_seeds: [0], validation_inference_steps: 2, validation_batches: 1}\n")
    before = snapshot(repo)
    (repo / ".gpu").mkdir()
    (repo / ".gpu" / "mine.txt").write_text("not a kit")
    refused = kit_command(repo, "prepare", "--config", "tiny.yaml", "--no-wheels")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: ") and "not a kit" in refused.stderr
    (repo / ".gpu" / "mine.txt").unlink()
    prepared = kit_command(repo, "prepare", "--config", "tiny.yaml", "--no-wheels")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    plan = json.loads(prepared.stdout.strip().splitlines()[-1])
    assert plan["carry"] == [".gpu"] and 0 < plan["travelling_mib"] < 60 and plan["moved"] and plan["staged"] == 4
    assert plan["travelling_mib"] == round(sum(travelling_files(repo, [".gpu"]).values()) / MIB, 2)
    assert not (repo / "fashiongen/pretrained/model.safetensors").exists()

    out = tmp_path / "out"
    ran = kit_command(repo, "run", "--device", "cpu", "--minutes", "0.5", "--out", str(out), "--work",
                      str(tmp_path / "work"), "--batch-size", "8", "--bench-models", "unet-tiny", "--bench-steps", "2",
                      "--no-compile")
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    bench = results["benchmarks"][0]
    assert bench["ours_images_per_s"] > 0 and bench["plain_images_per_s"] > 0 and bench["flops_per_image"] > 1e6
    assert results["training"]["steps"] >= 1 and results["cuda_tests"] == {"skipped": "--device cpu"}
    assert len(list(out.iterdir())) <= 8 and all(p.stat().st_size < 16 * MIB for p in out.iterdir())

    assert kit_command(repo, "restore").returncode == 0 and snapshot(repo) == {**before, **{
        k: v for k, v in snapshot(repo).items() if k.startswith(".gpu/")}}
    missing = kit_command(repo, "run", "--device", "cpu", "--kit", "nowhere", "--out", str(tmp_path / "o2"))
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: nowhere: no kit.json")

    unpacked = kit_command(repo, "unpack", str(out), "--to", str(tmp_path / "model"))
    assert unpacked.returncode == 0, unpacked.stderr[-2000:]
    assert "python evaluate.py --model" in unpacked.stdout
    again = kit_command(repo, "unpack", str(out), "--to", str(tmp_path / "model"))
    assert again.returncode == 2 and "exists" in again.stderr
    results["kit"] = "0123456789ab"  # the results of another kit's run beside these pieces
    (out / "results.json").write_text(json.dumps(results))
    foreign = kit_command(repo, "unpack", str(out), "--to", str(tmp_path / "other"))
    assert foreign.returncode == 2 and "not 0123456789ab" in foreign.stderr and not (tmp_path / "other").exists()
    _use_the_model(tmp_path / "model", source, tmp_path)


def _use_the_model(model: Path, source: Path, tmp_path: Path) -> None:
    from fashiongen.pipeline import FashionGenPipeline
    from fashiongen.release import publish
    from script_helpers import load_script

    info = json.loads((model / "model.json").read_text())
    assert info["text"]["encoder"] == "minilm" and info["training"]["gpu_kit"]["max_abs_state_difference"] < 1e-2
    pipe = FashionGenPipeline.from_pretrained(model)
    image = pipe(["red dress"], seed=0, num_inference_steps=2)[0]
    assert image.size == (32, 32)
    report = tmp_path / "eval"
    assert load_script("evaluate").main(
        ["--model", str(model), "--captions", str(source), "--split", "all", "--num-images", "4", "--steps", "2",
         "--reference", str(source), "--val-fraction", "0.25", "--critic", "none", "--cache-dir",
         str(tmp_path / "cache"), "--kid-subset-size", "2", "--quiet", "--out", str(report)]) == 0
    assert torch.isfinite(torch.tensor(json.loads((report / "report.json").read_text())["metrics"]["fid"]["value"]))
    published = publish(model, tmp_path / "published", dtype="float16", critic=None)
    assert FashionGenPipeline.from_pretrained(published)(["red dress"], seed=0, num_inference_steps=2)[0].size == (32, 32)


@pytest.mark.slow
def test_resident_batches_hold_the_datasets_pixels_in_the_samplers_epoch_order(tmp_path: Path, garments16: Path,
                                                                               text_cache_dir: Path) -> None:
    from fashiongen.data import FashionDataset
    from fashiongen.gpu.feed import ResidentBatches
    from fashiongen.train import prepare
    from fashiongen.train.data import EpochSampler
    from training_helpers import tiny_config

    config = tiny_config(garments16, tmp_path, text_cache_dir, **{"train.caption_dropout_prob": 0.5,
                                                                  "model.attributes": "[colour, gender]"})
    run = prepare(config, show_progress=False)
    feed = ResidentBatches.of(run, torch.device("cpu"))
    dataset = run.train_examples.dataset
    unflipped = FashionDataset(dataset.source, dataclasses.replace(dataset.config, hflip=False), config.seed)
    for index in range(len(dataset)):  # the uint8 photos give back the float pixels the loader would give
        assert torch.equal(feed.photos[index].permute(2, 0, 1).float().div(127.5).sub(1.0), unflipped[index]["pixel_values"])
    for epoch in (0, 3):
        feed.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), config.seed, config.train.batch_size)
        sampler.set_epoch(epoch)
        batches = list(feed)
        assert torch.cat([b["index"] for b in batches]).tolist() == list(sampler)
    dropped = torch.cat([b["text_mask"].sum(dim=1) == feed.masks[feed.empty].sum() for b in batches])
    attributes = torch.cat([b["attribute_ids"] for b in batches])
    assert 0 < int(dropped.sum()) < len(dropped) and bool((attributes[dropped] == 0).all())
    assert batches[0]["text_states"].shape == (8, feed.states.shape[1], feed.states.shape[2])  # one padded length
