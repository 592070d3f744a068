"""Hostile input to training runs, configs and model files (issue 33): one writer per run, weights that are NaN or
infinite, model.json values out of range, config files that are not YAML mappings, and train.output_dir that is a file.
Each refusal is one `error:` line and exit 2, and leaves the user's files as they were."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_helpers import export_tiny
from safetensors.torch import load_file, save_file
from script_helpers import REPO, load_script
from test_hostile_cli import assert_one_error, snapshot
from training_helpers import tiny_overrides

from fashiongen.config import TextConfig
from fashiongen.models.files import DESCRIPTION_DIGEST, MODEL_FORMAT, ModelFileError, description_digest, sha256_of
from fashiongen.pipeline import FashionGenPipeline
from fashiongen.runs import LOCK_FILE, MetricsLog, create_run_dir
from fashiongen.text import CaptionEncoder

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sample_py():
    return load_script("sample")


@pytest.fixture(scope="module")
def train_py():
    return load_script("train")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "export", CaptionEncoder(TextConfig(cache_dir="")), resolution=16)


def _copy_model(model: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for file in model.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


def _rewrite_info(folder: Path, change) -> None:
    """Edit model.json with `change(raw)`, then recompute its weights checksum and description digest: a file that
    passes every checksum, as a hand edit or a diverged training's export would."""
    raw = json.loads((folder / "model.json").read_text())
    change(raw)
    raw["weights"]["sha256"] = sha256_of(folder / raw["weights"]["file"])
    raw[DESCRIPTION_DIGEST] = description_digest(raw)
    (folder / "model.json").write_text(json.dumps(raw, indent=2) + "\n")


def _poison(model: Path, to: Path, value: float) -> tuple[Path, str]:
    """A copy of `model` whose one tensor holds `value` (NaN or inf), checksums recomputed; and that tensor's name."""
    folder = _copy_model(model, to)
    state = load_file(folder / "model.safetensors")
    name = sorted(state)[len(state) // 2]
    state[name].view(-1)[0] = value
    save_file(state, folder / "model.safetensors", metadata={"format": MODEL_FORMAT})
    _rewrite_info(folder, lambda raw: None)
    return folder, name


# ---------------------------------------------------------------- model files


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(value: float, model: Path, tmp_path: Path,
                                                                  sample_py, capsys: pytest.CaptureFixture) -> None:
    folder, name = _poison(model, tmp_path / "poisoned", value)
    with pytest.raises(ModelFileError, match=f"model.safetensors: tensor {name} holds NaN or infinite"):
        FashionGenPipeline.from_pretrained(folder)
    out, before = tmp_path / "out", snapshot(folder)
    capsys.readouterr()
    assert sample_py.main(["--model", str(folder), "a red dress", "--out", str(out), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, str(folder / "model.safetensors"), name)
    assert snapshot(folder) == before and not out.exists()


MODEL_JSON_CASES = {
    "text.max_length 10^9": (lambda raw: raw["text"].update(max_length=10**9), "text.max_length"),
    "config text.max_length 10^9": (lambda raw: raw["config"]["text"].update(max_length=10**9), "config.text.max_length"),
    "num_train_timesteps 0": (lambda raw: raw["diffusion"].update(num_train_timesteps=0), "diffusion.num_train_timesteps"),
    "config model.num_train_timesteps 0": (lambda raw: raw["config"]["model"].update(num_train_timesteps=0),
                                           "config.model.num_train_timesteps"),
    "num_train_timesteps a string": (lambda raw: raw["diffusion"].update(num_train_timesteps="many"),
                                     "diffusion.num_train_timesteps"),
}


@pytest.mark.parametrize("case", list(MODEL_JSON_CASES))
def test_model_json_values_out_of_range_are_refused_naming_the_key(case: str, model: Path, tmp_path: Path, sample_py,
                                                                   capsys: pytest.CaptureFixture) -> None:
    change, key = MODEL_JSON_CASES[case]
    folder = _copy_model(model, tmp_path / "edited")
    _rewrite_info(folder, change)
    with pytest.raises(ModelFileError, match=f"model.json: '?{key}"):
        FashionGenPipeline.from_pretrained(folder)
    out, before = tmp_path / "out", snapshot(folder)
    capsys.readouterr()
    assert sample_py.main(["--model", str(folder), "a red dress", "--out", str(out), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, str(folder / "model.json"), key)
    assert snapshot(folder) == before and not out.exists()


# ---------------------------------------------------------------- config files and train.output_dir


def _deep() -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


CONFIG_CASES = {
    "random bytes": (lambda: bytes(range(256)) * 4, "not a text file"),
    "PNG renamed": (lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "not a text file"),
    "NUL byte": (lambda: b"name: my\x00run\n", "NUL byte"),
    "list": (lambda: b"- name: run\n- seed: 1\n", "must be a mapping"),
    "scalar": (lambda: b"42\n", "must be a mapping"),
    "empty": (lambda: b"", "empty config"),
    "only comments": (lambda: b"# nothing here\n", "empty config"),
    "not YAML": (lambda: b"name: [unclosed\n", "not valid YAML"),
    "deeply nested": (_deep, "nested too deeply"),
    "huge": (lambda: b"name: " + b"x" * (2 << 20) + b"\n", "larger than 1 MB"),
    "infinite integer": (lambda: b"train:\n  max_steps: .inf\n", "train.max_steps"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_config_that_is_not_a_yaml_mapping_exits_2_naming_it(case: str, train_py, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    content, reason = CONFIG_CASES[case]
    config = tmp_path / "mine" / "config.yaml"
    config.parent.mkdir()
    config.write_bytes(content())
    before = snapshot(config.parent)
    capsys.readouterr()
    assert train_py.main([str(config), f"train.output_dir={tmp_path / 'runs'}", "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, str(config), reason)
    assert snapshot(config.parent) == before and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["the file", "under the file"])
def test_output_dir_that_is_a_file_exits_2_before_any_work(where: str, train_py, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    taken = tmp_path / "runs"
    taken.write_bytes(b"my notes, not a folder")
    output_dir = taken if where == "the file" else taken / "inside"
    capsys.readouterr()
    assert train_py.main([f"train.output_dir={output_dir}", f"data.source={tmp_path / 'no-data'}", "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, "train.output_dir", str(taken), "not a folder")  # before the data is opened
    assert taken.read_bytes() == b"my notes, not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_read_only_output_dir_exits_2(train_py, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert train_py.main([f"train.output_dir={locked / 'runs'}", "--quiet"]) == 2
        assert_one_error(capsys.readouterr().err, "train.output_dir", str(locked), "cannot write")
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------- one writer per run


def _create(output_dir: str, start: float) -> str:
    time.sleep(max(0.0, start - time.time()))
    return create_run_dir(output_dir, "race").name


def test_runs_created_at_once_get_distinct_numbers(tmp_path: Path) -> None:
    start = time.time() + 1.0
    with multiprocessing.get_context("fork").Pool(6) as pool:
        names = pool.starmap(_create, [(str(tmp_path), start)] * 12)
    assert sorted(names) == [f"{n:03d}-race" for n in range(1, 13)]


def _train(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *args, "--quiet"]


@pytest.mark.slow
def test_two_fresh_train_processes_at_once_get_distinct_run_dirs(tmp_path: Path, garments16: Path,
                                                                 text_cache_dir: Path) -> None:
    args = tiny_overrides(garments16, tmp_path / "runs", text_cache_dir, **{"train.max_steps": 1,
                                                                            "train.validation_prompts": "[]"})
    runs = [subprocess.Popen(_train(*args), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    run_dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert run_dirs == ["001-default", "002-default"]
    for name in run_dirs:
        assert [r["step"] for r in MetricsLog(tmp_path / "runs" / name / "metrics.jsonl").read() if "loss" in r] == [1]


@pytest.mark.slow
def test_a_second_resume_of_a_run_in_training_exits_2_naming_the_holder(tmp_path: Path, garments16: Path,
                                                                        text_cache_dir: Path) -> None:
    output_dir = tmp_path / "runs"
    first = subprocess.run(_train(*tiny_overrides(garments16, output_dir, text_cache_dir, **{
        "train.max_steps": 2, "train.validation_prompts": "[]"})), cwd=tmp_path, env=ENV, capture_output=True, text=True,
        timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = output_dir / "001-default"
    longer = tiny_overrides(garments16, output_dir, text_cache_dir, **{"train.max_steps": 400, "train.checkpoint_every": 400,
                                                                       "train.validation_prompts": "[]"})
    holder = subprocess.Popen(_train(*longer, "--resume", str(run_dir)), cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while MetricsLog(run_dir / "metrics.jsonl").read()[-1].get("step", 0) < 3:  # the holder is training
            assert holder.poll() is None and time.time() < deadline, holder.stderr.read() if holder.stderr else ""
            time.sleep(0.1)
        second = subprocess.run(_train(*longer, "--resume", str(run_dir)), cwd=tmp_path, env=ENV, capture_output=True,
                                text=True, timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        assert_one_error(second.stderr, str(run_dir), f"pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGTERM)  # it saves and stops
        holder.communicate(timeout=300)
    assert holder.returncode == 128 + signal.SIGTERM
    steps = [r["step"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if "loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # every step logged once, by one writer
    assert (run_dir / LOCK_FILE).is_file()  # left in place, unlocked: the next resume takes it
    resumed = subprocess.run(_train(*tiny_overrides(garments16, output_dir, text_cache_dir, **{
        "train.max_steps": steps[-1] + 1, "train.validation_prompts": "[]"}), "--resume", str(run_dir)),
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.mark.slow
def test_a_run_held_by_this_process_is_refused_to_another_and_free_after(tmp_path: Path) -> None:
    from fashiongen.runs import RunDirError, hold_run, release_run

    run_dir = create_run_dir(tmp_path, "held")
    hold_run(run_dir)
    hold_run(run_dir)  # re-entrant within one process
    probe = ("import sys; from fashiongen.runs import RunDirError, hold_run\n"
             "try: hold_run(sys.argv[1])\nexcept RunDirError as e: print(e); sys.exit(2)\n")
    refused = subprocess.run([sys.executable, "-c", probe, str(run_dir)], cwd=REPO, capture_output=True, text=True, env=ENV)
    assert refused.returncode == 2 and f"pid {os.getpid()}" in refused.stdout and str(run_dir) in refused.stdout
    release_run(run_dir)
    free = subprocess.run([sys.executable, "-c", probe, str(run_dir)], cwd=REPO, capture_output=True, text=True, env=ENV)
    assert free.returncode == 0, free.stdout + free.stderr
    assert issubclass(RunDirError, ValueError)  # train.py reports it as a ConfigError: one line, exit 2
