"""The evaluation report: report.json (every number with its sample count) and report.md with plots.

Every score of generated images is shown beside the same score of real validation images, so a
number is read against its ceiling.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..extras import require
from ..utils import LOCK_FILE, NotRegularFile, atomic_path, atomic_write_text, open_regular
from ..errors import UserError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
OWNER_FILE = "evaluation.json"  # which evaluation writes this folder, and the sha256 of every file it wrote
GENERATED = "generated"  # submission sets (--model): their own submission.json says which run they hold
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # utils.atomic_path's, left by a killed writer


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def _pm(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """'mean ± std' of an entry with mean/std, or its value."""
    if not entry:
        return "-"
    if "mean" in entry:
        std = entry.get("std")
        return _fmt(entry["mean"], digits) + (f" ± {_fmt(std, digits)}" if std is not None else "")
    return _fmt(entry.get("value"), digits)


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files only (the plots need the 'eval' extra; reading a report does not)."""
    require("matplotlib", "eval", "the evaluation plots (matplotlib)").use("Agg")
    return require("matplotlib.pyplot", "eval", "the evaluation plots (matplotlib)")


def save_figure(figure: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    return path


def category_bars(per_category: dict[str, dict[str, Any]], path: Path, metric: str = "critic score") -> Path:
    """Generated vs real mean critic score per category, with the number of generated images on each bar."""
    names = sorted(per_category, key=lambda name: -per_category[name].get("count_generated", 0))[:25]
    def value(name: str, key: str) -> float:
        found = per_category[name].get(key)
        return float("nan") if found is None else float(found)

    generated = [value(n, "generated") for n in names]
    real = [value(n, "real") for n in names]
    figure, axes = pyplot().subplots(figsize=(max(6, 0.5 * len(names) + 2), 4))
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], generated, width=0.4, label="generated")
    axes.bar([p + 0.2 for p in positions], real, width=0.4, label="real validation")
    for position, name in zip(positions, names):
        axes.text(position - 0.2, 0, str(per_category[name].get("count_generated", "")), ha="center", va="bottom", fontsize=7)
    axes.set_xticks(list(positions), names, rotation=45, ha="right")
    axes.set_ylabel(metric)
    axes.legend()
    axes.set_title(f"{metric} per category")
    return save_figure(figure, path)


def sweep_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """FID and critic score against each swept setting (one panel per metric, one line per other setting)."""
    figure, panels = pyplot().subplots(1, 2, figsize=(10, 4))
    keys = [k for k in rows[0]["setting"]]
    x_key = keys[0]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = ", ".join(f"{k}={row['setting'][k]}" for k in keys[1:]) or "all"
        groups.setdefault(label, []).append(row)
    for panel, metric in zip(panels, ("fid", "critic_score")):
        for label, group in groups.items():
            group = sorted(group, key=lambda r: r["setting"][x_key])
            panel.plot([r["setting"][x_key] for r in group], [r[metric] for r in group], marker="o", label=label)
        panel.set_xlabel(x_key)
        panel.set_ylabel(metric.replace("_", " "))
        panel.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    figure.suptitle(f"sweep over {', '.join(keys)} ({rows[0].get('num_images', '?')} images each)")
    return save_figure(figure, path)


def markdown(report: dict[str, Any]) -> str:
    """report.md: what was evaluated, the metric table (generated vs real), memorisation, figures."""
    meta, metrics = report.get("meta", {}), report.get("metrics", {})
    lines = ["# FashionGen evaluation", ""]
    lines += [f"- images: `{meta.get('images')}` ({meta.get('num_generated')} generated)",
              f"- model: `{(meta.get('model') or {}).get('fingerprint', 'unknown (a folder of images)')}`",
              f"- settings: {json.dumps(meta.get('settings')) if meta.get('settings') else 'unknown'}",
              f"- reference: `{(meta.get('reference') or {}).get('source')}` split `{(meta.get('reference') or {}).get('split')}`, "
              f"{(meta.get('reference') or {}).get('count')} images at {meta.get('resolution')} px",
              f"- critic: `{(meta.get('critic') or {}).get('path', 'none')}`", ""]
    lines += ["## Metrics", "", "| metric | generated | real validation | n generated / n real |", "|---|---|---|---|"]
    fid = metrics.get("fid")
    if fid:
        lines.append(f"| FID (TF-Inception pool3) | {_fmt(fid.get('value'), 2)} | {_fmt(fid.get('real_vs_real'), 2)} | "
                     f"{fid.get('num_generated')} / {fid.get('num_real')} |")
    kid = metrics.get("kid")
    if kid:
        floor = kid.get("real_vs_real")
        lines.append(f"| KID x 1000 (subsets of {kid.get('subset_size')}) | {_fmt(1000 * kid['mean'], 2)} ± "
                     f"{_fmt(1000 * kid['std'], 2)} | {_fmt(1000 * floor['mean'], 2) + ' ± ' + _fmt(1000 * floor['std'], 2) if floor else '-'} | "
                     f"{kid.get('num_generated')} / {kid.get('num_real')} |")
    for key, title in (("critic_score", "critic score (cosine)"), ("r_precision", "R-precision (1 of 100)"),
                       ("critic_is", "critic_is (category head; not Inception's IS)")):
        entry = metrics.get(key)
        if entry:
            lines.append(f"| {title} | {_pm(entry.get('generated'))} | {_pm(entry.get('real'))} | "
                         f"{entry.get('count_generated')} / {entry.get('count_real')} |")
    for name, entry in (metrics.get("attribute_accuracy") or {}).items():
        generated, real = entry.get("generated") or {}, entry.get("real") or {}
        lines.append(f"| {name} accuracy (critic head) | {_fmt(generated.get('accuracy'))} | {_fmt(real.get('accuracy'))} | "
                     f"{generated.get('count')} / {real.get('count')} |")
    if fid and fid.get("real_vs_real") is not None:
        lines += ["", f"FID and KID in the real column are the real-vs-real floor: {metrics['real_vs_real']['num_train']} "
                      f"{metrics['real_vs_real']['split']} photos against the same validation photos, the score of a perfect "
                      "generator at this count."]
    if fid and fid.get("warning"):
        lines += ["", f"> {fid['warning']}"]
    memorisation = report.get("memorisation") or {}
    if memorisation:
        lines += ["", "## Memorisation: nearest training images", "",
                  "| space | generated median | real-val median | real-val closest-1% threshold | generated at least that close |",
                  "|---|---|---|---|---|"]
        for space, stats in memorisation.items():
            generated, baseline = stats.get("generated", {}), stats.get("baseline", {})
            lines.append(f"| {space} | {_fmt(generated.get('p50'))} | {_fmt(baseline.get('p50'))} | "
                         f"{_fmt(stats.get('baseline_p1_threshold'))} | {_fmt(100 * stats.get('fraction_closer_than_baseline_p1', float('nan')), 1)}% "
                         f"({stats.get('generated_closer_count', '?')} of {generated.get('count', '?')}) |")
    figures = report.get("figures") or {}
    if figures:
        lines += ["", "## Figures", ""]
        for title, file in figures.items():
            lines += [f"**{title}**", "", f"![{title}]({file})", ""]
    return "\n".join(lines) + "\n"


def settings_phrase(settings: dict[str, Any]) -> str:
    """'dpm++, 20 steps, guidance 3' for a diffusion model, 'one-step, truncation 0.8' for a GAN: the settings a report
    recorded (only those its model's family reads)."""
    parts = [str(settings["scheduler"])] if settings.get("scheduler") else []
    for key, shown in (("num_inference_steps", "{} steps"), ("guidance_scale", "guidance {:g}"), ("truncation", "truncation {:g}")):
        if settings.get(key) is not None:
            parts.append(shown.format(settings[key]))
    return ", ".join(parts) or "default settings"


def headline_metrics(report: dict[str, Any]) -> dict[str, str]:
    """The numbers a model card shows, each with its real-image counterpart and sample counts."""
    metrics, meta = report.get("metrics", {}), report.get("meta", {})
    settings = meta.get("settings") or {}
    found = {"evaluated on": f"{meta.get('num_generated')} generated images vs {(meta.get('reference') or {}).get('count')} "
                             f"real validation photos ({settings_phrase(settings)})"}
    if fid := metrics.get("fid"):
        floor = f" (real-vs-real floor {_fmt(fid['real_vs_real'], 2)})" if fid.get("real_vs_real") is not None else ""
        found["FID"] = _fmt(fid.get("value"), 2) + floor
    if kid := metrics.get("kid"):
        floor = (f" (real-vs-real floor {_fmt(1000 * kid['real_vs_real']['mean'], 2)} ± {_fmt(1000 * kid['real_vs_real']['std'], 2)})"
                 if kid.get("real_vs_real") else "")
        found["KID x 1000"] = f"{_fmt(1000 * kid['mean'], 2)} ± {_fmt(1000 * kid['std'], 2)}" + floor
    for key, title in (("critic_score", "critic score"), ("r_precision", "R-precision (1 of 100)")):
        if entry := metrics.get(key):
            found[title] = f"{_pm(entry.get('generated'))} (real photos {_pm(entry.get('real'))})"
    for name, entry in (metrics.get("attribute_accuracy") or {}).items():
        generated, real = (entry.get("generated") or {}).get("accuracy"), (entry.get("real") or {}).get("accuracy")
        ratio = f"; {_fmt(100 * generated / real, 0)}% of real" if generated is not None and real else ""
        found[f"{name} accuracy"] = f"{_fmt(generated)} (real photos {_fmt(real)}{ratio})"
    return found


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """report.json and report.md in `out_dir` (atomic); returns the directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(report, indent=2, default=_json_default) + "\n")
    atomic_write_text(out_dir / REPORT_MD, markdown(report))
    return out_dir


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------- the report folder's owner


class ReportFolderError(UserError, ValueError):
    """An --out folder this evaluation may not write: another evaluation's, or holding files it did not write."""


def _checksums(out: Path) -> dict[str, str]:
    """sha256 of every file under `out` but our lock, record and temporaries, and the submission sets under
    generated/ folders (a resumed set is checked against its own header, submission.json, by generate_submission)."""
    files: dict[str, str] = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if GENERATED in relative.parts[:-1]:
            continue
        if (path.is_file() or path.is_symlink()) and str(relative) not in (LOCK_FILE, OWNER_FILE) \
                and not TEMPORARY.match(relative.name):
            try:
                files[str(relative)] = _sha256(path)
            except NotRegularFile:
                files[str(relative)] = "not a regular file"
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_owner(out: Path) -> dict[str, Any] | None:
    try:
        with open_regular(out / OWNER_FILE) as handle:
            record = json.loads(handle.read().decode("utf-8"))
    except (NotRegularFile, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("job"), dict) and isinstance(record.get("files"), dict)
    return record if ok else None


class ReportFolder:
    """An evaluation's claim on its --out folder. A folder that holds files is written only by the evaluation that
    wrote them (the same job: mode, inputs and settings; `confirm` adds what is known later, the model's fingerprint)
    and only while they are as it wrote them (their sha256 is recorded in evaluation.json), unless `overwrite`. The
    same job run again resumes; a job killed mid-run (its record says 'running') resumes over what it had written."""

    def __init__(self, out: Path, job: dict[str, Any], overwrite: bool) -> None:
        self.out, self.job, self.overwrite = out, job, overwrite
        self.previous = _read_owner(out)
        self.files = _checksums(out)
        if self.previous is None and (out / OWNER_FILE).exists():  # a file of that name, but not our record: the user's
            self.files[OWNER_FILE] = "not an evaluation record"
        if self.previous is None and self.files and not overwrite:
            shown = ", ".join(list(self.files)[:3]) + (f" and {len(self.files) - 3} more" if len(self.files) > 3 else "")
            raise ReportFolderError(f"{out} holds files no evaluation recorded writing ({shown}); pass --overwrite to "
                                    "write the report there anyway, or choose another --out")
        self.confirm()

    def confirm(self, **known: Any) -> None:
        """Check the job (with `known` added) against the folder's record, then record it as running there."""
        self.job = {**self.job, **known}
        if self.previous is not None and not self.overwrite:
            old = self.previous["job"]
            differ = sorted(key for key in self.job if key in old and old[key] != self.job[key])
            if differ:
                raise ReportFolderError(f"{self.out} holds the report of another evaluation (it differs in "
                                        f"{', '.join(differ)}); pass --overwrite to replace it, or choose another --out")
            recorded = self.previous["files"]
            changed = [name for name, digest in self.files.items() if recorded.get(name) != digest]
            if changed and self.previous.get("state") != "running":
                raise ReportFolderError(f"{self.out / changed[0]} was changed or added after the evaluation wrote this "
                                        "folder; pass --overwrite to replace the report, or choose another --out")
        self._record("running", self.files)

    def _record(self, state: str, files: dict[str, str]) -> None:
        atomic_write_text(self.out / OWNER_FILE, json.dumps({"job": self.job, "state": state, "files": files},
                                                            indent=2, ensure_ascii=False, default=str) + "\n")

    def seal(self) -> None:
        """Record the sha256 of everything the evaluation wrote: the folder is done and ours."""
        self.files = _checksums(self.out)
        self._record("done", self.files)

    def abandon(self) -> None:
        """A failed job that wrote no report file leaves the folder's record as it found it (none: output_lock then
        removes a folder the job created); one that wrote some stays 'running', for the same job to resume."""
        if _checksums(self.out) != {k: v for k, v in self.files.items() if k != OWNER_FILE}:
            return
        if self.previous is None:
            (self.out / OWNER_FILE).unlink(missing_ok=True)
        else:
            atomic_write_text(self.out / OWNER_FILE, json.dumps(self.previous, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def claimed(out: str | Path, job: dict[str, Any], overwrite: bool = False) -> Iterator[ReportFolder]:
    """Claim `out` (already created and locked by utils.output_lock) for `job`; seal it when the job succeeds."""
    folder = ReportFolder(Path(out), job, overwrite)
    try:
        yield folder
    except BaseException:
        folder.abandon()
        raise
    folder.seal()
