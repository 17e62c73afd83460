"""``knowfactor-repro``: factorization, plug-and-play assembly, disentanglement and transfer at CPU scale.

On the embedded dSprites-lite (32x32), four factor tasks (shape, scale, orientation, posX) are
learned from a teacher; posY is held out. Per seed, every model is a :func:`knowfactor.engine.fit` run of
the ``dsprites_tiny`` setting: the teacher, KF with the InfoMax-Bottleneck (IMB), the KD-only ablation of
KF (beta = 0 and no InfoMax term), and a plain KD student with the CKN's architecture. Reported:

1. per-task test accuracy of each factor network vs the teacher vs the KD student;
2. the assembled network against the stand-alone factor networks (max abs logit difference);
3. leakage: a linear probe on each task feature z_i predicting the *other* tasks' labels (mean
   accuracy; lower means more disentangled), IMB vs KD-only;
4. transfer: a linear probe for the held-out task on the frozen CKN feature vs on the KD student's.

The probes are part of each run's recorded result, so a rerun reuses them with the run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from knowfactor import __version__
from knowfactor.config import build_config
from knowfactor.data import MultiTaskData, select_tasks
from knowfactor.engine import embed, eval_loader, fit, linear_probe, load_data, load_network, task_accuracy
from knowfactor.models import KFStudent, assemble, factor_network, pooled
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_mean_std, markdown_table, mean_std, plot_bars, write_results

CONFIG = "dsprites_tiny"
TASKS = ("shape", "scale", "orientation", "posX")
HELD_OUT = "posY"
#: Scales of ``knowfactor-repro --preset``: epochs of every run (the setting's milestone scales with them).
PRESETS = {"demo": {"epochs": 8}, "small": {"epochs": 30}}
PRESET_HELP = {"demo": "8 epochs per run (the dsprites_tiny recipe)", "small": "30 epochs per run"}
#: The students trained against each seed's teacher: run name -> options of the run.
STUDENTS = {
    "imb": {"method": "kf"},
    "kd_only": {"method": "kf", "beta": 0.0, "lambda_feat": 0.0},
    "kd": {"method": "kd"},
}
#: Rows of the table and bars of the figure: key of a seed's result -> label.
MODELS = {
    "teacher": "teacher",
    "imb": "KF factor networks (IMB)",
    "assembled": "KF assembled network",
    "kd_only": "KF factor networks (KD only: beta 0, no InfoMax)",
    "kd": "KD student (CKN architecture)",
}


def _leakage(student: KFStudent, data: MultiTaskData, device: torch.device) -> float:
    """Mean accuracy of probes from each task feature z_i to every other task j (off-diagonal)."""
    scores = []
    for i in range(student.num_tasks):
        train = embed(student.TSN[i], eval_loader(data.x_train, data.y_train), device)
        test = embed(student.TSN[i], eval_loader(data.x_test, data.y_test), device)
        for j in range(student.num_tasks):
            if j != i:
                scores.append(linear_probe((train[0], train[1][:, j]), (test[0], test[1][:, j])))
    return sum(scores) / len(scores)


def _transfer(encode: Callable, data: MultiTaskData, device: torch.device) -> float:
    """A linear probe for the held-out task on the frozen features ``encode(x)``."""
    column = data.task_names.index(HELD_OUT)
    train = embed(encode, eval_loader(data.x_train, data.y_train), device)
    test = embed(encode, eval_loader(data.x_test, data.y_test), device)
    return linear_probe((train[0], train[1][:, column]), (test[0], test[1][:, column]))


@torch.no_grad()
def _assembly_gap(student: KFStudent, data: MultiTaskData, device: torch.device) -> float:
    """Max abs difference between the assembled network's and the stand-alone factor networks' logits."""
    factors = [factor_network(student, i) for i in range(student.num_tasks)]
    assembled = assemble(factors).eval()
    images = data.x_test[:512].to(device)
    together = assembled(images)
    return max(float((f(images) - t).abs().max()) for f, t in zip(factors, together, strict=True))


def _measure(name: str, run_out: Path, data: MultiTaskData, device: torch.device) -> dict:
    """The probes of a trained student (``data`` holds every task, the held-out one included)."""
    tasks = select_tasks(data, list(TASKS))
    if name == "kd":
        student, _ = load_network(run_out / "kd.pt")
        student.to(device)
        return {"transfer": _transfer(lambda x: student.features(x)[-1], data, device)}
    student, _ = load_network(run_out / "kf.pt")
    student.to(device)
    measures = {}
    if name == "imb":
        measures["assembly_gap"] = _assembly_gap(student, tasks, device)
        assembled = assemble([factor_network(student, i) for i in range(student.num_tasks)])
        accuracy = task_accuracy(assembled, eval_loader(tasks.x_test, tasks.y_test), device)
        measures["assembled"] = dict(zip(TASKS, accuracy, strict=True))
    measures["leakage"] = _leakage(student, tasks, device)
    measures["transfer"] = _transfer(lambda x: pooled(student.CKN(x))[-1], data, device)
    return measures


def run(out: Path, device: torch.device, *, seeds: int = 3, preset: str = "demo", epochs: int | None = None) -> dict:
    """Train every model for every seed (reusing runs recorded in ``out/runs``); write the report into ``out``."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    epochs = PRESETS[preset]["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    log = get_logger()
    cache = RunCache(out / "runs", __version__)
    data = load_data(CONFIG)
    started = time.monotonic()

    def train(name: str, config, measure: Callable[[Path], dict], before: Callable[[], None] = lambda: None, **key):
        run_out = out / "runs" / name

        def compute() -> dict:
            before()
            cache.fresh_folder(name)
            return {**fit(config, run_out, device, data=data, quiet=True), **measure(run_out)}

        # the teacher file by its place in ``out``: the recorded runs still match when ``out`` is moved
        teacher = None if config.teacher is None else Path(config.teacher).relative_to(out).as_posix()
        return cache.run(name, {"config": dataclasses.replace(config, teacher=teacher), **key}, compute)

    per_seed = []
    for seed in range(seeds):
        common = {"config": CONFIG, "tasks": TASKS, "seed": seed, "epochs": epochs}
        teacher_name, teacher_config = f"teacher-seed{seed}", build_config("demo", method="teacher", **common)
        teacher_file = out / "runs" / teacher_name / "teacher.pt"

        def teacher_weights(name=teacher_name, config=teacher_config, file=teacher_file) -> None:
            if not file.is_file():  # its result is recorded but the weights are gone: train it again
                cache.path(name).unlink(missing_ok=True)
                train(name, config, _nothing)

        results = {"teacher": train(teacher_name, teacher_config, _nothing)}
        for name, options in STUDENTS.items():
            config = build_config("demo", **options, **common, teacher=teacher_file)

            def measure(run_out: Path, name=name) -> dict:
                return _measure(name, run_out, data, device)

            key = {"teacher": results["teacher"]["tasks"]}
            results[name] = train(f"{name}-seed{seed}", config, measure, teacher_weights, **key)
        per_seed.append(_seed_result(results))
        log.info(f"seed {seed} done ({time.monotonic() - started:.0f} s)")
    return _report(out, per_seed, preset=preset, epochs=epochs, seconds=round(time.monotonic() - started, 1))


def _nothing(run_out: Path) -> dict:
    return {}


def _seed_result(runs: dict[str, dict]) -> dict:
    imb, kd_only, kd = runs["imb"], runs["kd_only"], runs["kd"]
    return {
        "teacher": runs["teacher"]["tasks"],
        "imb": imb["tasks"],
        "kd_only": kd_only["tasks"],
        "kd": kd["tasks"],
        "assembly_gap": imb["assembly_gap"],
        "assembled": imb["assembled"],
        "leakage": {"imb": imb["leakage"], "kd_only": kd_only["leakage"]},
        "transfer": {"ckn_imb": imb["transfer"], "ckn_kd_only": kd_only["transfer"], "kd_student": kd["transfer"]},
    }


def _report(out: Path, seeds: list[dict], *, preset: str, epochs: int, seconds: float) -> dict:
    """``results.json``, ``results.md`` and ``results.png`` of the per-seed results."""
    rows = [[label, *(format_mean_std([s[key][t] for s in seeds]) for t in TASKS)] for key, label in MODELS.items()]
    table = markdown_table(["model", *TASKS], rows)
    leak = {k: mean_std([s["leakage"][k] for s in seeds]) for k in ("imb", "kd_only")}
    margin = leak["kd_only"][0] - leak["imb"][0]
    verdict = "lower" if margin > leak["imb"][1] + leak["kd_only"][1] else "no clear difference"
    transfer = {k: format_mean_std([s["transfer"][k] for s in seeds]) for k in ("ckn_imb", "ckn_kd_only", "kd_student")}
    gap = max(s["assembly_gap"] for s in seeds)
    probes = markdown_table(
        ["measure", "value (%)"],
        [
            [
                "leakage, IMB task features (other tasks' probe accuracy)",
                format_mean_std([s["leakage"]["imb"] for s in seeds]),
            ],
            ["leakage, KD-only task features", format_mean_std([s["leakage"]["kd_only"] for s in seeds])],
            [f"transfer to {HELD_OUT}: probe on the CKN (IMB)", transfer["ckn_imb"]],
            [f"transfer to {HELD_OUT}: probe on the CKN (KD only)", transfer["ckn_kd_only"]],
            [f"transfer to {HELD_OUT}: probe on the KD student", transfer["kd_student"]],
        ],
    )
    headline = (
        f"assembly max |logit diff| {gap:.1e}; leakage IMB {leak['imb'][0]:.2f}% vs KD-only "
        f"{leak['kd_only'][0]:.2f}% ({verdict}); {len(seeds)} seed(s), dSprites-lite"
    )
    figure = plot_bars(
        out / "results.png",
        list(TASKS),
        {label: [[s[key][t] for s in seeds] for t in TASKS] for key, label in MODELS.items()},
        ylabel="test accuracy (%)",
        title=f"dSprites-lite 32x32, per-task test accuracy ({len(seeds)} seed(s), {epochs} epochs per run)",
    )
    results = {"seeds": seeds, "assembly_max_abs_diff": gap, "preset": preset, "epochs": epochs, "seconds": seconds}
    write_results(
        out,
        title="knowfactor-repro: test accuracy (%) per task",
        table=table,
        headline=headline,
        results=results,
        notes=f"Probes:\n\n{probes}",
        figure=figure,
    )
    return {**results, "headline": headline}
