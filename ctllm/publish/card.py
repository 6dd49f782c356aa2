"""A run's model card (``final/README.md``), written from what the run recorded (``run_facts``), in the hub's
conventions: YAML metadata through ``huggingface_hub``'s ``ModelCardData`` (base_model, datasets, language,
license, tags, model-index), then the recipe, the data, the hardware, the curves, the SFT → DPO evaluation and
the intended use. The user may edit it before publishing; an edited card is kept (``write_card`` only writes
one that is missing, unless asked to start again)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ctllm.errors import UserError
from ctllm.publish.curves import write_curves_png
from ctllm.publish.run_facts import EMBEDDED_HUB_ID, EMBEDDED_LICENSE, DataCounts, RunFacts, read_run_facts

CARD_NAME = "README.md"
CURVES_NAME = "training_curves.png"
TAGS = ["dpo", "trl-compatible", "ctllm-dpo-studio"]  # the last one marks a card written here
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}


_LOCAL_PATH = re.compile(r"(?<![\w:/])(?:~|/)[^\s()'\"`,]+")


def without_local_paths(text: str) -> str:
    """``text`` with each absolute local path cut to its last part: a published card names no folder of this machine."""
    return _LOCAL_PATH.sub(lambda m: Path(m.group(0)).name or m.group(0), text)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "—"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def eval_rows(facts: RunFacts) -> list[list[Any]]:
    """The SFT → DPO table: (measure, SFT, DPO, n) from eval.json."""
    rows: list[list[Any]] = []
    overall = (facts.evaluation.get("pairs") or {}).get("overall") or {}
    if overall:
        rows.append(["preference accuracy, held-out pairs", _pct(overall.get("ref_preference_accuracy")),
                     _pct(overall.get("model_preference_accuracy")), overall.get("n", "—")])
        rows.append(["implicit reward accuracy, held-out pairs", "—", _pct(overall.get("reward_accuracy")),
                     overall.get("n", "—")])
    for entry in facts.evaluation.get("prompts") or []:
        headline = str(entry.get("headline") or "refusal_rate")
        measure = "refuses" if headline == "refusal_rate" else "answers"
        label = f"{measure} {entry.get('kind', '')} prompts ({entry.get('name', '?')}, greedy)"
        rows.append([label, _pct((entry.get("ref") or {}).get(headline)),
                     _pct((entry.get("model") or {}).get(headline)), entry.get("n", "—")])
    return rows


def eval_results(facts: RunFacts, dataset_id: str) -> list[EvalResult]:
    """The model-index results: this model's (DPO) figures on the held-out pairs and the prompt lists."""
    results = []
    overall = (facts.evaluation.get("pairs") or {}).get("overall") or {}
    if isinstance(overall.get("model_preference_accuracy"), (int, float)):
        results.append(EvalResult(task_type="text-generation", dataset_type=dataset_id,
                                  dataset_name="held-out preference pairs", dataset_split="test",
                                  metric_type="accuracy", metric_name="preference accuracy",
                                  metric_value=round(float(overall["model_preference_accuracy"]), 4)))
    for entry in facts.evaluation.get("prompts") or []:
        headline = str(entry.get("headline") or "refusal_rate")
        value = (entry.get("model") or {}).get(headline)
        if isinstance(value, (int, float)):
            results.append(EvalResult(task_type="text-generation", dataset_type=f"ctllm/{entry.get('name')}",
                                      dataset_name=f"{entry.get('name')} prompts", metric_type=headline,
                                      metric_name=headline.replace("_", " "), metric_value=round(float(value), 4)))
    return results


def card_data(facts: RunFacts, repo: str | None = None, dataset_repo: str | None = None,
              license_id: str | None = None) -> ModelCardData:
    tags = TAGS + (["lora", "peft"] if facts.lora else [])
    snapshot = str(facts.resolved.get("data_hash") or facts.status.get("data_hash") or "")
    dataset_id = dataset_repo or (f"ctllm-snapshot-{snapshot[:12]}" if snapshot else "ctllm-snapshot")
    return ModelCardData(
        base_model=facts.base_model,
        datasets=[dataset_repo] if dataset_repo else None,
        language=facts.languages or None,
        license=license_id or (EMBEDDED_LICENSE if facts.base_model == EMBEDDED_HUB_ID else "other"),
        library_name="peft" if facts.lora else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        model_name=(repo or facts.name).split("/")[-1],
        eval_results=eval_results(facts, dataset_id) or None,
    )


def counts_table(train: DataCounts, held_out: DataCounts) -> str:
    rows = []
    for title, attribute in (("language", "by_language"), ("source", "by_source"), ("kind", "by_kind")):
        train_counts, eval_counts = getattr(train, attribute), getattr(held_out, attribute)
        for key in dict.fromkeys([*train_counts, *eval_counts]):
            rows.append([title, f"`{key}`", train_counts.get(key, 0), eval_counts.get(key, 0)])
    rows.append(["**total**", "", train.total, held_out.total])
    return _table(["by", "value", "training pairs", "held-out pairs"], rows)


def _recipe(facts: RunFacts) -> str:
    config, resolved = facts.config, facts.resolved
    method = f"DPO, `{config.get('loss_type', 'sigmoid')}` loss, β = {config.get('beta', '?')}"
    if config.get("rpo_alpha"):
        method += f", plus the chosen answer's NLL (RPO) weighted {config['rpo_alpha']}"
    tuning = (f"LoRA (r = {config.get('lora_r')}, α = {config.get('lora_alpha')}, "
              f"modules {', '.join(config.get('lora_target_modules') or [])})" if facts.lora
              else "full fine-tuning")
    changed = facts.changed_hyperparameters()
    table = (_table(["hyperparameter", "value", "default"], [[f"`{n}`", f"`{v}`", f"`{d}`"] for n, v, d in changed])
             if changed else "Every hyperparameter is at its default.")
    return "\n".join([
        f"- **Method:** {method}; {tuning}.",
        f"- **Policy initialised from:** `{facts.base_label}`.",
        "- **Reference model:** "
        f"{without_local_paths(resolved.get('reference') or facts.status.get('reference') or 'not recorded')}.",
        f"- **Steps:** {facts.status.get('step', '?')} of {resolved.get('total_steps', '?')} optimizer steps, "
        f"global batch {resolved.get('global_batch', '?')} pairs.",
        "",
        "Hyperparameters that differ from the studio's defaults (everything else at its default):",
        "",
        table,
    ])


def _data(facts: RunFacts, dataset_repo: str | None) -> str:
    resolved = facts.resolved
    source = str(facts.config.get("data", ""))
    source_text = (f"the collection `{source.split(':', 1)[1]}`" if source.startswith("collection:")
                   else f"the file `{Path(source).name}`")
    lines = [
        f"Trained on {source_text}: {resolved.get('train_pairs', facts.train_data.total)} pairs; "
        f"{resolved.get('eval_pairs', facts.eval_data.total)} held out ({resolved.get('eval_split', 'not recorded')}).",
        "",
        counts_table(facts.train_data, facts.eval_data),
        "",
        f"- Snapshot hash of the training pairs: `{resolved.get('data_hash', 'not recorded')}`; "
        f"of the held-out pairs: `{resolved.get('eval_data_hash', 'not recorded')}`.",
        f"- Pairs dropped (no completion token left after truncation): {resolved.get('dropped_pairs', 0)}; "
        f"pairs truncated to `max_length`: {resolved.get('truncated_pairs', 0)}.",
    ]
    if dataset_repo:
        lines.append(f"- The snapshot is published as the dataset [{dataset_repo}](https://huggingface.co/datasets/"
                     f"{dataset_repo}).")
    return "\n".join(lines)


def _usage(facts: RunFacts, repo: str | None) -> str:
    model_id = repo or f"<path to runs/{facts.name}/final>"
    if facts.lora:
        load = (f"from peft import AutoPeftModelForCausalLM\n"
                f"model = AutoPeftModelForCausalLM.from_pretrained(\"{model_id}\")  # the base, with this adapter\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{model_id}\")")
    else:
        load = (f"model = AutoModelForCausalLM.from_pretrained(\"{model_id}\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{model_id}\")")
    return "\n".join([
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        load,
        "messages = [{\"role\": \"user\", \"content\": \"How do I pick a lock on my neighbour's door?\"}]",
        "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0][ids.shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        f"For llama.cpp and Ollama: `python -m ctllm export-gguf run:{facts.name} --dtype q8_0 --out "
        f"{facts.name}.gguf` writes the GGUF and an Ollama `Modelfile` beside it "
        f"(`ollama create {facts.name} -f Modelfile`).",
    ])


def _limits(facts: RunFacts) -> str:
    languages = ", ".join(LANGUAGE_NAMES.get(lang, lang) for lang in facts.languages) or "not recorded"
    lines = [
        "- **Intended use:** research on preference optimisation (DPO) and harmlessness, and as a demonstration of "
        "what a small DPO run changes. Not for decisions about people, and not a safety filter.",
        f"- **Languages:** trained on {languages} pairs.",
    ]
    if facts.base_model == EMBEDDED_HUB_ID:
        lines.append("- **English only:** the 135M base model (SmolLM2-135M-Instruct) cannot write Chinese; its "
                     "Chinese output is garbled.")
    lines += [
        "- **Limits:** a small model trained on few pairs: it can still answer harmful requests, refuse harmless "
        "ones, and state false facts with confidence. The refusal and answer rates above come from greedy answers "
        "to short prompt lists, classified by patterns, not by people.",
        "- **Evaluation notes:** " + ("; ".join(str(n) for n in facts.evaluation.get("notes") or []) or "none") + ".",
    ]
    return "\n".join(lines)


def card_body(facts: RunFacts, repo: str | None = None, dataset_repo: str | None = None) -> str:
    wall = _duration(facts.wall_seconds)
    devices = f"{facts.resolved.get('world_size', facts.status.get('world_size', 1))} process(es) on " \
              f"`{facts.resolved.get('device', 'not recorded')}`"
    evaluation = eval_rows(facts)
    sections = [
        f"# {(repo or facts.name).split('/')[-1]}",
        f"A DPO fine-tune of `{facts.base_label}` trained with CT-LLM DPO Studio (run `{facts.name}`, "
        f"{facts.status.get('state', 'state not recorded')}). Everything below is written from what the run recorded.",
        "## Training recipe", _recipe(facts),
        "## Training data", _data(facts, dataset_repo),
        "## Hardware and time",
        f"{devices}, mixed precision `{facts.resolved.get('mixed_precision', 'not recorded')}`; wall time {wall} "
        f"(started {facts.status.get('started', '?')}, finished {facts.status.get('finished', '?')}), "
        "the reference pass and the final evaluation included.",
        "## Training curves", f"![training curves]({CURVES_NAME})",
        "## Evaluation: SFT → DPO",
        (_table(["measure", "SFT (reference)", "DPO (this model)", "n"], evaluation) if evaluation
         else "The end-of-run evaluation did not run (eval.json is missing)."),
        "## Uses", _usage(facts, repo),
        "## Intended use and limits", _limits(facts),
    ]
    return "\n\n".join(sections) + "\n"


def build_card(facts: RunFacts, repo: str | None = None, dataset_repo: str | None = None,
               license_id: str | None = None) -> ModelCard:
    data = card_data(facts, repo, dataset_repo, license_id)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(facts, repo, dataset_repo)}")


def card_path(run_dir: Path) -> Path:
    return Path(run_dir) / "final" / CARD_NAME


def write_card(run_dir: Path, repo: str | None = None, dataset_repo: str | None = None,
               license_id: str | None = None, overwrite: bool = False) -> Path:
    """Write ``final/README.md`` and ``final/training_curves.png``; a card written here before (perhaps edited
    since) is kept unless ``overwrite``. Returns the card's path."""
    final = Path(run_dir) / "final"
    if not final.is_dir():
        raise UserError(f"{final} is missing: the run has no trained model to describe (has it finished?)")
    facts = read_run_facts(run_dir)
    write_curves_png(facts.metrics, final / CURVES_NAME)
    path = card_path(run_dir)
    if overwrite or not is_studio_card(path):
        build_card(facts, repo, dataset_repo, license_id).save(path)
    return path


def is_studio_card(path: Path) -> bool:
    """Whether ``path`` holds a card this module wrote (perhaps edited since): not missing, and not the stub
    README.md that peft's ``save_pretrained`` leaves beside an adapter."""
    try:
        tags = ModelCard.load(path).data.tags or []
    except Exception:  # missing, or a header no longer readable: written again
        return False
    return TAGS[-1] in tags


def parse_card(text: str, where: str = CARD_NAME) -> ModelCard:
    """The card ``text`` parsed; a UserError naming the problem when its YAML metadata is broken."""
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as error:  # huggingface_hub raises ValueError or yaml errors for a broken header
        raise UserError(f"{where}: the card's YAML metadata cannot be read: {error}") from None
    if not card.data.to_dict():
        raise UserError(f"{where}: the card has no YAML metadata block (--- ... --- at the top)")
    return card


def save_card_text(run_dir: Path, text: str) -> Path:
    """Save an edited card after checking that its metadata still parses."""
    path = card_path(run_dir)
    parse_card(text, str(path)).save(path)
    return path


def set_card_repos(path: Path, repo: str, dataset_repo: str | None) -> ModelCard:
    """Keep an (edited) card's text and point its metadata at the repositories it is published to."""
    card = parse_card(path.read_text(encoding="utf-8"), str(path))
    card.data.model_name = repo.split("/")[-1]
    if dataset_repo:
        for result in card.data.eval_results or []:
            if result.dataset_split == "test":  # the held-out pairs: published with the dataset
                result.dataset_type = dataset_repo
        datasets = list(card.data.datasets or [])
        card.data.datasets = datasets if dataset_repo in datasets else [*datasets, dataset_repo]
    return card
