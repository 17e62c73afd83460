"""``knowfactor-repro``: factorization, assembly and disentanglement of the release's dSprites recipe at CPU scale.

On the embedded dSprites-lite (64x64), four factor tasks (shape, scale, orientation, posX) are learned from a
teacher; posY is held out. Per seed, every model is a :func:`knowfactor.engine.fit` run of the
``dsprites_simplecnn_tiny`` setting (the release's SimpleConv64 recipe, narrower): the teacher, and three
factorizations that differ in the task bottleneck only --

* ``vib``: the InfoMax-Bottleneck with the release's per-sample variational TSNs (``SimpleGaussianConv64``:
  KL(q(z|x) ‖ N(0, I)) per sample, z sampled in training, μ at evaluation);
* ``kd_only``: the same networks with beta = 0 and no InfoMax term;
* ``moment``: the batch-moment bottleneck of the release's ``TSN_backbone`` (a deterministic TSN whose batch mean
  and variance are pulled to N(0, 1)), setting ``dsprites_simplecnn_tiny_moment``;

and a plain KD student with the CKN's architecture. Reported per run:

1. per-task test accuracy; the assembled network of ``vib`` against its stand-alone factor networks;
2. the bottleneck's KL on the test split (what beta weighs: per sample for the VIB, of the batch moments for the
   moment bottleneck);
3. disentanglement of the task features (z_1..z_N concatenated, as evaluated: μ for the variational TSNs): the
   mutual information gap (MIG) against the four factors, on the features as they are;
4. leakage: linear probes from each z_i to the *other* tasks (mean accuracy, lower = more disentangled), and the
   own-task probe from z_i to task i, so that a drop in leakage that comes from losing information shows as such;
5. transfer: a linear probe for the held-out posY on the frozen CKN feature, or on the KD student's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from knowfactor import __version__
from knowfactor.config import build_config, get_config
from knowfactor.data import MultiTaskData, select_tasks
from knowfactor.engine import embed, eval_loader, fit, load_data, load_network, task_accuracy
from knowfactor.losses import infomin_loss
from knowfactor.metrics import linear_probe, mutual_information_gap
from knowfactor.models import KFStudent, assemble, factor_network, pooled
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_mean_std, markdown_table, mean_std, plot_bars, write_results

CONFIG = "dsprites_simplecnn_tiny"
TASKS = ("shape", "scale", "orientation", "posX")
HELD_OUT = "posY"
#: Scales of ``knowfactor-repro --preset``: epochs of the students and of the teacher (milestones scale with them).
PRESETS = {"demo": {"epochs": 10, "teacher_epochs": 30}, "small": {"epochs": 30, "teacher_epochs": 60}}
PRESET_HELP = {
    "demo": "students 10 epochs, teacher 30 (dsprites_simplecnn_tiny)",
    "small": "students 30 epochs, teacher 60",
}
#: The students trained against each seed's teacher: run name -> options of the run.
STUDENTS = {
    "vib": {"method": "kf"},
    "kd_only": {"method": "kf", "beta": 0.0, "lambda_feat": 0.0},
    "moment": {"method": "kf", "config": "dsprites_simplecnn_tiny_moment"},
    "kd": {"method": "kd"},
}
BOTTLENECKS = ("vib", "moment")  # the students whose beta --beta sets
FACTORIZATIONS = {
    "vib": "IMB, per-sample VIB (release)",
    "kd_only": "KD only (beta 0, no InfoMax)",
    "moment": "IMB, batch-moment bottleneck",
}
#: Rows of the accuracy table: key of a seed's result -> label.
MODELS = {
    "teacher": "teacher",
    "vib": "KF factor networks, IMB per-sample VIB",
    "assembled": "KF assembled network (VIB)",
    "kd_only": "KF factor networks, KD only (beta 0, no InfoMax)",
    "moment": "KF factor networks, IMB batch-moment bottleneck",
    "kd": "KD student (CKN architecture)",
}
#: Bottleneck and disentanglement measures of each factorization: key -> label.
MEASURES = {
    "kl": "bottleneck KL per task (nats)",
    "mig": "MIG of the task features (x100)",
    "leakage": "leakage: z_i -> other tasks, probe accuracy",
    "own_task": "own task: z_i -> task i, probe accuracy",
}


@torch.no_grad()
def _bottleneck_kl(student: KFStudent, data: MultiTaskData, device: torch.device) -> float:
    """The KL of the bottleneck term on the test split, mean over the TSNs: per sample (summed over d) for the
    variational TSNs, of the split's feature moments (mean over d) for the deterministic ones."""
    images = data.x_test.to(device)
    return sum(float(infomin_loss(*tsn.bottleneck(images)[1:])) for tsn in student.TSN) / student.num_tasks


def _probes(student: KFStudent, data: MultiTaskData, device: torch.device) -> dict[str, float]:
    """MIG of the concatenated task features, and the mean accuracy of the probes from each z_i to every other task
    (leakage) and to its own task."""
    train = [embed(tsn, eval_loader(data.x_train, data.y_train), device) for tsn in student.TSN]
    test = [embed(tsn, eval_loader(data.x_test, data.y_test), device) for tsn in student.TSN]
    own, other = [], []
    for i, ((x_train, y_train), (x_test, y_test)) in enumerate(zip(train, test, strict=True)):
        for j in range(student.num_tasks):
            (own if i == j else other).append(linear_probe((x_train, y_train[:, j]), (x_test, y_test[:, j])))
    codes = np.concatenate([x for x, _ in test], axis=1)
    mig = 100.0 * mutual_information_gap(codes, test[0][1])
    return {"mig": mig, "leakage": sum(other) / len(other), "own_task": sum(own) / len(own)}


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
    measures = _probes(student, tasks, device) | {"kl": _bottleneck_kl(student, tasks, device)}
    if name == "vib":
        measures["assembly_gap"] = _assembly_gap(student, tasks, device)
        assembled = assemble([factor_network(student, i) for i in range(student.num_tasks)])
        accuracy = task_accuracy(assembled, eval_loader(tasks.x_test, tasks.y_test), device)
        measures["assembled"] = dict(zip(TASKS, accuracy, strict=True))
    measures["transfer"] = _transfer(lambda x: pooled(student.CKN(x))[-1], data, device)
    return measures


def run(
    out: Path,
    device: torch.device,
    *,
    seeds: int = 3,
    preset: str = "demo",
    epochs: int | None = None,
    beta: float | None = None,
) -> dict:
    """Train every model for every seed (reusing runs recorded in ``out/runs``); write the report into ``out``.

    ``epochs`` overrides the preset's epochs of the students and the teacher alike; ``beta`` the weight of the
    bottleneck term of ``vib`` and ``moment`` (default: the setting's, 1e-3)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    student_epochs = PRESETS[preset]["epochs"] if epochs is None else epochs
    teacher_epochs = PRESETS[preset]["teacher_epochs"] if epochs is None else epochs
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
        common = {"config": CONFIG, "tasks": TASKS, "seed": seed}
        teacher_name = f"teacher-seed{seed}"
        teacher_config = build_config("demo", method="teacher", epochs=teacher_epochs, **common)
        teacher_file = out / "runs" / teacher_name / "teacher.pt"

        def teacher_weights(name=teacher_name, config=teacher_config, file=teacher_file) -> None:
            if not file.is_file():  # its result is recorded but the weights are gone: train it again
                cache.path(name).unlink(missing_ok=True)
                train(name, config, _nothing)

        results = {"teacher": train(teacher_name, teacher_config, _nothing)}
        for name, options in STUDENTS.items():
            options = options | ({"beta": beta} if beta is not None and name in BOTTLENECKS else {})
            config = build_config("demo", **common | options, epochs=student_epochs, teacher=teacher_file)

            def measure(run_out: Path, name=name) -> dict:
                return _measure(name, run_out, data, device)

            key = {"teacher": results["teacher"]["tasks"]}
            results[name] = train(f"{name}-seed{seed}", config, measure, teacher_weights, **key)
        per_seed.append(_seed_result(results))
        log.info(f"seed {seed} done ({time.monotonic() - started:.0f} s)")
    seconds = round(time.monotonic() - started, 1)
    beta = get_config(CONFIG).beta if beta is None else beta
    return _report(out, per_seed, preset=preset, epochs=(student_epochs, teacher_epochs), beta=beta, seconds=seconds)


def _nothing(run_out: Path) -> dict:
    return {}


def _seed_result(runs: dict[str, dict]) -> dict:
    result = {key: runs[key]["tasks"] for key in ("teacher", *STUDENTS)}
    result["assembled"] = runs["vib"]["assembled"]
    result["assembly_gap"] = runs["vib"]["assembly_gap"]
    for measure in MEASURES:
        result[measure] = {key: runs[key][measure] for key in FACTORIZATIONS}
    result["transfer"] = {key: runs[key]["transfer"] for key in (*FACTORIZATIONS, "kd")}
    return result


def _report(out: Path, seeds: list[dict], *, preset: str, epochs: tuple[int, int], beta: float, seconds: float) -> dict:
    """``results.json``, ``results.md`` and ``results.png`` of the per-seed results."""
    rows = [[label, *(format_mean_std([s[key][t] for s in seeds]) for t in TASKS)] for key, label in MODELS.items()]
    table = markdown_table(["model", *TASKS], rows)
    measures = markdown_table(
        ["factorization", *MEASURES.values()],
        [
            [label, *(format_mean_std([s[m][key] for s in seeds]) for m in MEASURES)]
            for key, label in FACTORIZATIONS.items()
        ],
    )
    transfer = markdown_table(
        [f"features probed for the held-out {HELD_OUT}", "accuracy (%)"],
        [[f"CKN, {label}", format_mean_std([s["transfer"][k] for s in seeds])] for k, label in FACTORIZATIONS.items()]
        + [["KD student", format_mean_std([s["transfer"]["kd"] for s in seeds])]],
    )
    gap = max(s["assembly_gap"] for s in seeds)
    means = {m: {k: mean_std([s[m][k] for s in seeds])[0] for k in FACTORIZATIONS} for m in MEASURES}
    headline = (
        "MIG x100 / leakage / own-task probe (%): "
        + "; ".join(
            f"{key} {means['mig'][key]:.1f} / {means['leakage'][key]:.1f} / {means['own_task'][key]:.1f}"
            for key in FACTORIZATIONS
        )
        + f"; beta {beta:g}; assembly max |logit diff| {gap:.1e}; {len(seeds)} seed(s), dSprites-lite"
    )
    plotted = {"mig": "MIG x100", "leakage": "leakage", "own_task": "own task"}  # the measures in %
    figure = plot_bars(
        out / "results.png",
        list(plotted.values()),
        {label: [[s[m][key] for s in seeds] for m in plotted] for key, label in FACTORIZATIONS.items()},
        ylabel="%",
        title=f"dSprites-lite task features, beta {beta:g} ({len(seeds)} seed(s))",
    )
    results = {"seeds": seeds, "assembly_max_abs_diff": gap, "preset": preset, "beta": beta, "seconds": seconds}
    results |= {"epochs": epochs[0], "teacher_epochs": epochs[1]}
    write_results(
        out,
        title="knowfactor-repro: test accuracy (%) per task",
        table=table,
        headline=headline,
        results=results,
        notes=f"Disentanglement of the task features z_1..z_4 (test split):\n\n{measures}\n\nTransfer:\n\n{transfer}",
        figure=figure,
    )
    return {**results, "headline": headline}
