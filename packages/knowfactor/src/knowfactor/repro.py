"""``knowfactor-repro``: factorization, plug-and-play assembly, disentanglement and transfer at CPU scale.

On the embedded dSprites-lite (32x32), four factor tasks (shape, scale, orientation, posX) are
learned from a teacher; posY is held out. Per seed, every model is a real ``knowfactor-train`` run:
the teacher, KF with the InfoMax-Bottleneck (IMB), the KD-only ablation of KF (beta = 0 and no
InfoMax term), and a plain KD student with the CKN's architecture. Reported:

1. per-task test accuracy of each factor network vs the teacher vs the KD student;
2. the assembled network against the stand-alone factor networks (max abs logit difference);
3. leakage: a linear probe on each task feature z_i predicting the *other* tasks' labels (mean
   accuracy; lower means more disentangled), IMB vs KD-only;
4. transfer: a linear probe for the held-out task on the frozen CKN feature vs on the KD student's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from knowfactor import cli as kcli
from knowfactor.configs import build_kd_student, build_student, get_config
from knowfactor.data import select_tasks
from knowfactor.engine import embed, linear_probe, task_accuracy
from knowfactor.models import assemble, factor_network, pooled
from shared import cli
from shared.checkpoint import load_checkpoint
from shared.data import TensorBatchDataset, make_loader
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import format_mean_std, markdown_table, mean_std, write_results

CONFIG = "dsprites_tiny"
TASKS = ("shape", "scale", "orientation", "posX")
HELD_OUT = "posY"


def _loader(x, y):
    return make_loader(TensorBatchDataset(x, y), 256, shard=False)


def _kf_student(run: Path):
    saved = load_checkpoint(run / "kf.pt")
    student = build_student(get_config(CONFIG), saved["task_classes"])
    student.load_state_dict(
        {k.removeprefix("student."): v for k, v in saved["state_dict"].items() if k.startswith("student.")}
    )
    return student.eval()


def _leakage(student, data, device) -> float:
    """Mean accuracy of probes from each task feature z_i to every other task j (off-diagonal)."""
    scores = []
    for i in range(student.num_tasks):
        train = embed(student.TSN[i], _loader(data.x_train, data.y_train), device)
        test = embed(student.TSN[i], _loader(data.x_test, data.y_test), device)
        for j in range(student.num_tasks):
            if j != i:
                scores.append(linear_probe((train[0], train[1][:, j]), (test[0], test[1][:, j])))
    return sum(scores) / len(scores)


def _transfer(encode, data, column: int, device) -> float:
    train = embed(encode, _loader(data.x_train, data.y_train), device)
    test = embed(encode, _loader(data.x_test, data.y_test), device)
    return linear_probe((train[0], train[1][:, column]), (test[0], test[1][:, column]))


@torch.no_grad()
def _assembly_gap(student, data, device) -> float:
    """Max abs difference between the assembled network's and the stand-alone factor networks' logits."""
    factors = [factor_network(student, i) for i in range(student.num_tasks)]
    assembled = assemble(factors).eval()
    images = data.x_test[:512].to(device)
    together = assembled(images)
    return max(float((f(images) - t).abs().max()) for f, t in zip(factors, together, strict=True))


def run_seed(out: Path, seed: int, epochs: int | None, device: torch.device) -> dict:
    """Teacher, KF (IMB), KF (KD only) and KD for one seed; returns the measurements."""
    common = ["--config", CONFIG, "--tasks", ",".join(TASKS), "--seed", str(seed), "--quiet", "--device", "cpu"]
    common += ["--epochs", str(epochs)] if epochs else []
    teacher_dir = out / f"teacher-seed{seed}"
    teacher = kcli.train(["--method", "teacher", "--out", str(teacher_dir), *common])
    runs = {
        "imb": ["--method", "kf"],
        "kd_only": ["--method", "kf", "--beta", "0", "--lambda-feat", "0"],
        "kd": ["--method", "kd"],
    }
    results = {"teacher": teacher["tasks"]}
    for name, extra in runs.items():
        args = [*extra, "--teacher", str(teacher_dir / "teacher.pt"), "--out", str(out / f"{name}-seed{seed}")]
        results[name] = kcli.train([*args, *common])["tasks"]
    data = kcli.load_data(CONFIG, None)
    tasks_only = select_tasks(data, list(TASKS))
    imb, kd_only = _kf_student(out / f"imb-seed{seed}"), _kf_student(out / f"kd_only-seed{seed}")
    results["assembly_gap"] = _assembly_gap(imb, tasks_only, device)
    results["assembled"] = dict(
        zip(
            TASKS,
            task_accuracy(
                assemble([factor_network(imb, i) for i in range(4)]),
                _loader(tasks_only.x_test, tasks_only.y_test),
                device,
            ),
            strict=True,
        )
    )
    results["leakage"] = {"imb": _leakage(imb, tasks_only, device), "kd_only": _leakage(kd_only, tasks_only, device)}
    kd_saved = load_checkpoint(out / f"kd-seed{seed}" / "kd.pt")
    kd_student = build_kd_student(get_config(CONFIG), kd_saved["task_classes"])
    kd_student.load_state_dict(kd_saved["state_dict"])
    held = data.task_names.index(HELD_OUT)
    results["transfer"] = {
        "ckn_imb": _transfer(lambda x: pooled(imb.CKN(x))[-1], data, held, device),
        "ckn_kd_only": _transfer(lambda x: pooled(kd_only.CKN(x))[-1], data, held, device),
        "kd_student": _transfer(lambda x: kd_student.eval().features(x)[-1], data, held, device),
    }
    return results


def repro(argv: Sequence[str] | None = None) -> dict:
    parser = cli.ArgumentParser(
        prog="knowfactor-repro",
        description="Factor networks vs teacher vs KD, assembly, leakage (IMB vs KD-only) and transfer on the "
        "embedded dSprites-lite, several seeds.",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the config's 8)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/knowfactor-repro/<time>)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise UserError("--seeds and --epochs must be >= 1")
    out = cli.run_dir(args.out, "knowfactor-repro", resume=False)
    device = torch.device("cpu")
    log = get_logger()
    started = time.monotonic()
    seeds = []
    for seed in range(args.seeds):
        seeds.append(run_seed(out / "runs", seed, args.epochs, device))
        log.info(f"seed {seed} done ({time.monotonic() - started:.0f} s)")

    def cell(key: str, task: str) -> str:
        return format_mean_std([s[key][task] for s in seeds])

    rows = [
        [name, *(cell(key, t) for t in TASKS)]
        for key, name in (
            ("teacher", "teacher"),
            ("imb", "KF factor networks (IMB)"),
            ("assembled", "KF assembled network"),
            ("kd_only", "KF factor networks (KD only: beta 0, no InfoMax)"),
            ("kd", "KD student (CKN architecture)"),
        )
    ]
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
        f"{leak['kd_only'][0]:.2f}% ({verdict}); {args.seeds} seed(s), dSprites-lite"
    )
    print(f"{table}\n\n{probes}\n\n{headline}", flush=True)
    results = {"seeds": seeds, "assembly_max_abs_diff": gap, "seconds": round(time.monotonic() - started, 1)}
    write_results(
        out,
        title="knowfactor-repro: test accuracy (%) per task",
        table=table,
        headline=headline,
        results=results,
        notes=f"Probes:\n\n{probes}",
    )
    return results
