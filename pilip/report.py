"""Side-by-side summary of training variants (e.g. energy-only vs energy + weak losses).

Each variant is a results folder written by ``pilip evaluate`` (metrics.json and plots) and,
optionally, ``pilip md`` (md.json). The summary is Markdown: one table of the model,
energy and force errors, MD stability (stable runs, first failure, h(r) MAE, steps/s) and
training time, one of force errors per element, the ratio of force RMSEs against the
baseline variant stated plainly, the seed-to-seed spread a committee measures, every distilled
student beside its teacher (errors and MD steps per second), and links to the plots.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.potential.terms import ENERGY, WEAK_TERMS

METRICS_FILE = "metrics.json"
MD_FILE = "md.json"
PLOTS = (
    ("parity_energy", "energy parity"),
    ("parity_forces", "force parity"),
    ("learning_curve", "learning curve"),
    ("calibration", "committee calibration"),
)


@dataclass
class Variant:
    """One trained and evaluated model: its name (the results folder's name) and results."""

    name: str
    directory: Path
    metrics: dict[str, Any]
    md: dict[str, Any] | None

    @property
    def losses(self) -> list[str]:
        return list(self.metrics.get("losses") or [])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PilipError(
            f"{path}: not valid JSON ({exc.msg}); re-run the step that wrote it"
        ) from None
    if not isinstance(value, dict):
        raise PilipError(f"{path}: expected a JSON object")
    return value


def load_variant(directory: str | Path) -> Variant:
    """Read ``directory``/metrics.json (required) and md.json (optional)."""
    directory = Path(directory)
    metrics_path = directory / METRICS_FILE
    if not metrics_path.is_file():
        raise PilipError(f"{metrics_path}: no such file; run pilip evaluate --out {directory}")
    metrics = _read_json(metrics_path)
    missing = [k for k in ("energy_rmse", "force_rmse", "n_energy") if k not in metrics]
    if missing:
        raise PilipError(f"{metrics_path}: missing key(s) {', '.join(missing)}; re-run evaluate")
    md_path = directory / MD_FILE
    md = _read_json(md_path) if md_path.is_file() else None
    return Variant(name=directory.name, directory=directory, metrics=metrics, md=md)


def choose_baseline(variants: list[Variant], name: str | None = None) -> Variant:
    """The variant ``name``, else the one trained on the energy loss alone, else the first."""
    if name is not None:
        for variant in variants:
            if variant.name == name:
                return variant
        names = ", ".join(v.name for v in variants)
        raise PilipError(f"--baseline {name!r}: not among the variants ({names})")
    for variant in variants:
        if variant.losses == [ENERGY] and variant.metrics.get("recipe", "plain") == "plain":
            return variant
    return variants[0]


def is_alone(variant: Variant) -> bool:
    """Whether a variant is a cheap level alone (``pilip baseline-model``: no network)."""
    return any(r.get("alone") for r in variant.metrics.get("recipes") or [])


def cheap_level_alone(variants: list[Variant]) -> Variant | None:
    """The variant that is a cheap level alone (``pilip baseline-model``), if any."""
    return next((variant for variant in variants if is_alone(variant)), None)


def worse_than_cheap_level(variants: list[Variant]) -> list[str]:
    """A sentence for every trained variant whose forces are worse than the cheap level's
    alone: its recipe did not even reach what the cheap level gives without training."""
    cheap = cheap_level_alone(variants)
    if cheap is None or cheap.metrics.get("force_rmse") is None:
        return []
    limit = cheap.metrics["force_rmse"]
    lines = []
    for v in variants:
        rmse = v.metrics.get("force_rmse")
        if v is cheap or rmse is None or round(rmse, 3) <= round(limit, 3):
            continue
        lines.append(
            f"- **{v.name}**'s forces ({_num(rmse)} eV/A) are worse than the cheap level alone "
            f"(**{cheap.name}**, {_num(limit)} eV/A): on this data its recipe does not reach "
            "what the cheap level gives without training."
        )
    return lines


def steps_per_second(md: dict[str, Any] | None) -> float | None:
    """MD steps per wall-clock second of a run's md.json: its ``steps_per_s`` where it has one,
    else every run's ``steps_done`` over their ``wall_time_s``; None without MD."""
    if not md:
        return None
    if md.get("steps_per_s") is not None:
        return float(md["steps_per_s"])
    runs = md.get("runs") or []
    steps = sum(r.get("steps_done") or 0 for r in runs)
    seconds = sum(r.get("wall_time_s") or 0.0 for r in runs)
    return steps / seconds if steps and seconds > 0 else None


def teacher_of(student: Variant, variants: list[Variant]) -> tuple[str, Variant | None] | None:
    """(the teacher's checkpoint, its variant among ``variants`` or None) of a distilled
    student, matched by the checkpoint each variant was evaluated from; None if ``student``
    is no student."""
    record = next(
        (r for r in student.metrics.get("recipes") or [] if r.get("name") == "distilled"), None
    )
    if record is None:
        return None
    path = os.path.normpath(str(record["teacher"]["path"]))
    for variant in variants:
        model = variant.metrics.get("model")
        if variant is not student and model and os.path.normpath(str(model)) == path:
            return path, variant
    return path, None


def _tabled(variant: Variant) -> bool:
    return any(r.get("tabled") for r in variant.metrics.get("recipes") or [])


def teacher_student_lines(variants: list[Variant]) -> list[str]:
    """A table of every distilled student beside its teacher: force and energy errors and MD
    steps per second (``[]`` without students)."""
    rows = []
    for student in variants:
        found = teacher_of(student, variants)
        if found is None:
            continue
        path, teacher = found
        s, t = student.metrics, teacher.metrics if teacher else {}
        ratio = None
        if s.get("force_rmse") is not None and t.get("force_rmse"):
            ratio = s["force_rmse"] / t["force_rmse"]
        s_speed = steps_per_second(student.md)
        t_speed = steps_per_second(teacher.md) if teacher else None
        if teacher is not None and _tabled(teacher):
            t_cell = "cannot run MD (baseline from labels tables)"
        else:
            t_cell = "not run" if t_speed is None else f"{t_speed:.0f}"
        speed = ""
        if s_speed is not None and t_speed:
            speed = f" ({s_speed / t_speed:.1f}x the teacher's)"
        rows.append(
            f"| {student.name} | {teacher.name if teacher else path} "
            f"| {_num(s.get('force_rmse'))} / {_num(t.get('force_rmse'))} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} "
            f"| {_num(s.get('energy_rmse_mev_per_atom'), digits=2)} / "
            f"{_num(t.get('energy_rmse_mev_per_atom'), digits=2)} "
            f"| {'not run' if s_speed is None else f'{s_speed:.0f}'}{speed} / {t_cell} |"
        )
    if not rows:
        return []
    return [
        "## Teachers and students",
        "",
        "A student (`pilip distill`) learns its teacher's energies and forces of a pool and "
        "needs no baseline at run time; its error is the teacher's plus its own fitting error.",
        "",
        "| student | teacher | force RMSE student / teacher (eV/A) | student/teacher "
        "| energy RMSE student / teacher (meV/atom) | MD steps/s student / teacher |",
        "|---|---|---|---:|---|---|",
        *rows,
    ]


def force_rmse_ratio(baseline: Variant, variant: Variant) -> float | None:
    """Baseline force RMSE / variant force RMSE (> 1: the variant's forces are better)."""
    base, other = baseline.metrics.get("force_rmse"), variant.metrics.get("force_rmse")
    if base is None or other is None or other == 0:
        return None
    return base / other


def _num(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _model_cell(variant: Variant) -> str:
    """The architecture trained (painn, schnet, mace); none for a cheap level alone."""
    if is_alone(variant):
        return "none"
    return str(variant.metrics.get("model_name") or "n/a")


def _md_cells(md: dict[str, Any] | None) -> list[str]:
    """The MD columns: stable runs (n/N over the run length), time to the first failure (ps;
    "—" when every run was stable), h(r) MAE and MD steps per second. "not run" without an
    md.json; "n/a" for a number an older md.json does not hold."""
    if md is None:
        return ["not run", "n/a", "n/a", "n/a"]
    n_runs, n_stable = md.get("n_runs", 0), md.get("n_stable", 0)
    length = md.get("settings", {}).get("steps", 0) * md.get("settings", {}).get("timestep", 0)
    first = md.get("min_time_to_failure_ps")
    if first is not None:
        failure = f"{first:.3f}"
    else:
        failure = "—" if n_stable == n_runs else "n/a"
    steps_per_s = md.get("steps_per_s")
    return [
        f"{n_stable}/{n_runs} over {length / 1000:g} ps",
        failure,
        _num(md.get("hr_mae")),
        "n/a" if steps_per_s is None else f"{steps_per_s:.0f}",
    ]


def md_sentence(variants: list[Variant]) -> list[str]:
    """What the MD columns mean, with the h(r) noise floor of the first md.json that has one."""
    mds = [v.md for v in variants if v.md is not None]
    if not mds:
        return []
    settings = mds[0].get("settings", {})
    text = (
        f"MD: Langevin NVT at {settings.get('temperature', 'n/a')} K from test structures; a "
        f"run fails when a starting bond length changes by more than "
        f"{settings.get('bond_threshold', 'n/a')} A (Fu et al., TMLR 2023). h(r) MAE: the "
        "integrated absolute difference of the distributions of all interatomic distances "
        "of the trajectories and of the test structures (0 identical, 2 disjoint)"
    )
    floors = [
        m["hr_mae_reference_halves"] for m in mds if m.get("hr_mae_reference_halves") is not None
    ]
    if floors:
        text += (
            f"; two halves of the test structures differ by {floors[0]:.3f} among themselves, "
            "so an h(r) MAE near that is within the reference's own noise"
        )
    return [text + "."]


def _time_cell(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _losses_cell(metrics: dict[str, Any]) -> str:
    """``energy, pitc x1.2, pisc x0.01 (eps 0.01 A, k 0.5)``: the weak terms with settings."""
    losses = list(metrics.get("losses") or [])
    if not losses:
        return "n/a"
    weights = metrics.get("loss_weights") or {}
    parts = []
    for name in losses:
        weight = weights.get(name)
        weak = name in WEAK_TERMS and weight is not None
        parts.append(f"{name} x{weight:g}" if weak else name)
    cell = ", ".join(parts)
    if set(WEAK_TERMS) & set(losses) and metrics.get("weak_eps") is not None:
        k = metrics.get("weak_k")
        cell += f" (eps {metrics['weak_eps']:g} A" + (f", k {k:g})" if k is not None else ")")
    return cell


def _ratio_sentence(baseline: Variant, variant: Variant) -> str:
    ratio = force_rmse_ratio(baseline, variant)
    b, v = baseline.metrics, variant.metrics
    energy = (
        f"energy RMSE {_num(b.get('energy_rmse_mev_per_atom'), digits=2)} -> "
        f"{_num(v.get('energy_rmse_mev_per_atom'), digits=2)} meV/atom"
    )
    if ratio is None:
        return (
            f"- **{variant.name}** vs **{baseline.name}**: no force RMSE to compare "
            f"(no structures with reference forces); {energy}."
        )
    forces = (
        f"force RMSE {_num(b.get('force_rmse'))} -> {_num(v.get('force_rmse'))} eV/A, "
        f"ratio {baseline.name}/{variant.name} = **{ratio:.2f}**"
    )
    if round(ratio, 2) > 1:  # judged at the precision shown: 0.998 reads as no difference
        verdict = f"{variant.name}'s forces are {ratio:.2f}x more accurate"
    elif round(1 / ratio, 2) > 1:
        verdict = (
            f"{variant.name}'s forces are {1 / ratio:.2f}x LESS accurate: "
            "on this data its recipe did not help the forces"
        )
    else:
        verdict = "no difference in the forces at this precision"
    return f"- **{variant.name}** vs **{baseline.name}**: {forces} ({verdict}); {energy}."


def committee_members(variant: Variant) -> list[float]:
    """The test force RMSEs (eV/A) of a committee's members alone ([] for a single model)."""
    members = (variant.metrics.get("members") or {}).get("force_rmse") or []
    return [float(x) for x in members if x is not None]


def seed_spread_sentences(variants: list[Variant], base: Variant) -> list[str]:
    """How far a single seed can move the force RMSE, as the committees measure it (their
    members differ in seed only), and which differences from ``base`` are inside that; the
    committee's calibration in one line. Without a committee: that it is not measured."""
    committees = [v for v in variants if len(committee_members(v)) >= 2]
    if not committees:
        return [
            "One training run (one seed) per variant: small differences may be seed-to-seed "
            "noise rather than an effect of the recipe (train a variant with `ensemble: N` "
            "to measure that noise)."
        ]
    lines = []
    for c in committees:
        members = np.asarray(committee_members(c))
        std = float(members.std(ddof=1))
        mean_rmse = c.metrics.get("force_rmse")
        text = (
            f"**Seed-to-seed spread.** The {len(members)} members of **{c.name}** differ only "
            f"in their seed; alone, their test force RMSEs span {members.min():.3f}-"
            f"{members.max():.3f} eV/A (standard deviation {std:.3f}), and their mean, the "
            f"committee, reaches {_num(mean_rmse)} eV/A"
        )
        ranked = [v for v in variants if v.metrics.get("force_rmse") is not None]
        others = [v for v in ranked if v is not base]
        if base.metrics.get("force_rmse") is not None and std > 0:
            inside, outside = [], []
            for v in others:
                diff = v.metrics["force_rmse"] - base.metrics["force_rmse"]
                (inside if abs(diff) <= 2 * std else outside).append(f"{v.name} {diff:+.3f}")
            text += f". Differences in force RMSE from **{base.name}**"
            if outside:
                text += f" larger than twice that ({2 * std:.3f} eV/A): {', '.join(outside)}"
            if inside:
                text += (
                    f"{';' if outside else ''} within twice that ({2 * std:.3f} eV/A), so "
                    f"possibly one seed's luck: {', '.join(inside)}"
                )
        close = [
            f"{a.name} and {b.name} ({abs(a.metrics['force_rmse'] - b.metrics['force_rmse']):.3f})"
            for i, a in enumerate(ranked)
            for b in ranked[i + 1 :]
            if a is not base and abs(a.metrics["force_rmse"] - b.metrics["force_rmse"]) <= 2 * std
        ]
        if close:
            text += f". Other pairs of runs within twice the spread: {', '.join(close)}"
        lines += [
            text + " (the spread is measured on this recipe; others, energy-only above all, "
            "may vary more between seeds).",
            "",
        ]
        calibration = c.metrics.get("calibration") or {}
        forces, energy = calibration.get("forces") or {}, calibration.get("energy") or {}
        if forces.get("spearman") is not None:
            lines.append(
                f"**Does {c.name}'s spread know its errors?** Spearman correlation of spread "
                f"and error: {forces['spearman']:.2f} over the force components (at best "
                f"{_num(forces.get('spearman_ideal'), digits=2)} for these spreads), "
                f"{_num(energy.get('spearman'), digits=2)} over the test energies; "
                f"miscalibration area of the forces {_num(forces.get('miscalibration_area'))}"
                f" as is, {_num(forces.get('miscalibration_area_scaled'))} after the scale "
                f"{_num(calibration.get('scale'), digits=2)} fitted on the validation energies "
                "(0 is calibrated, 0.5 the worst; see its calibration plot).",
            )
    return lines[:-1] if lines and lines[-1] == "" else lines


def _link(target: Path, out_path: Path) -> str:
    return Path(os.path.relpath(target, out_path.parent)).as_posix()


def render_summary(
    variants: list[Variant], out_path: Path, baseline: str | None = None, title: str = ""
) -> str:
    """The Markdown summary; links to plots are relative to ``out_path``'s folder."""
    if not variants:
        raise PilipError("no variants to report: pass --results DIR [DIR ...]")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise PilipError(f"--results: two folders share a name ({', '.join(names)}); rename one")
    base = choose_baseline(variants, baseline)
    variants = [base] + [v for v in variants if v is not base]  # the reference run first
    first = variants[0].metrics
    lines = [f"# {title or 'pilip results'}", ""]
    lines.append(
        f"Energies: {first.get('n_energy', 0)} test-split structures (reference "
        f"{', '.join(first.get('energy_reference') or ['n/a'])}). Forces: "
        f"{first.get('n_force_structures', 0)} structures with reference forces "
        f"({', '.join(first.get('force_reference') or ['n/a'])}; "
        f"{first.get('n_force_components', 0)} components) that no model was trained on. "
        f"Baseline: **{base.name}**."
    )
    if len({v.metrics.get("dataset") for v in variants}) > 1:
        lines += ["", "**Warning:** the variants were evaluated on different datasets."]
    lines += [
        "",
        "| variant | model | losses | energy RMSE (meV/atom) | energy MAE (meV/atom) "
        "| energy RMSE (meV) | force RMSE (eV/A) | force MAE (eV/A) "
        f"| force RMSE ratio {base.name}/variant | MD stable | MD first failure (ps) "
        "| h(r) MAE | MD steps/s | training time | epochs | recipe |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for v in variants:
        m = v.metrics
        ratio = force_rmse_ratio(base, v)
        lines.append(
            f"| {v.name} | {_model_cell(v)} | {_losses_cell(m)} "
            f"| {_num(m.get('energy_rmse_mev_per_atom'), digits=2)} "
            f"| {_num(m.get('energy_mae_mev_per_atom'), digits=2)} "
            f"| {_num(m.get('energy_rmse'), scale=1000.0, digits=1)} "
            f"| {_num(m.get('force_rmse'))} | {_num(m.get('force_mae'))} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} | {' | '.join(_md_cells(v.md))} "
            f"| {_time_cell(m.get('train_time_s'))} | {m.get('epochs') or 'n/a'} "
            f"| {m.get('recipe') or 'plain'} |"
        )
    md_note = md_sentence(variants)
    if md_note:
        lines += ["", *md_note]
    elements = sorted(
        {e for v in variants for e in (v.metrics.get("force_rmse_per_element") or {})}
    )
    if elements:
        lines += [
            "",
            "Force RMSE per element (eV/A):",
            "",
            "| variant | " + " | ".join(elements) + " |",
            "|---|" + "---:|" * len(elements),
        ]
        for v in variants:
            per = v.metrics.get("force_rmse_per_element") or {}
            lines.append(f"| {v.name} | " + " | ".join(_num(per.get(e)) for e in elements) + " |")
    others = [v for v in variants if v is not base]
    if others:
        lines += ["", "## What each recipe bought", ""]
        lines += [_ratio_sentence(base, v) for v in others]
        worse = worse_than_cheap_level(variants)
        if worse:
            lines += ["", *worse]
        lines += ["", *seed_spread_sentences(variants, base)]
    students = teacher_student_lines(variants)
    if students:
        lines += ["", *students]
    lines += ["", "## Plots", "", "| variant | " + " | ".join(p[1] for p in PLOTS) + " |"]
    lines.append("|---|" + "---|" * len(PLOTS))
    for v in variants:
        plots = v.metrics.get("plots") or {}
        cells = []
        for key, label in PLOTS:
            trained = plots.get(f"{key}_trained", True)  # an untrained run's curve: a placeholder
            file = plots.get(key) if trained else None
            cells.append(
                f"![{v.name} {label}]({_link(v.directory / file, out_path)})" if file else "n/a"
            )
        lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(
    result_dirs: list[str | Path],
    out_path: str | Path,
    baseline: str | None = None,
    title: str = "",
) -> str:
    """Read every variant, render the summary and write it atomically to ``out_path``."""
    out_path = Path(out_path)
    variants = [load_variant(d) for d in result_dirs]
    text = render_summary(variants, out_path, baseline, title)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text)
    return text
