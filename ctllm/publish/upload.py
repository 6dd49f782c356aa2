"""The folders a run is published as, and their upload.

```
<out>/model/     the model repository: README.md (the card), training_curves.png, the model or the LoRA adapter,
                 the tokenizer, ctllm/ (config.yaml, metrics.jsonl, eval.json); merged/ with --merged (LoRA runs)
<out>/dataset/   with --with-data, the dataset repository <repo>-pairs: README.md linking back to the model,
                 data/train.parquet and data/test.parquet (the run's snapshot)
```

The folders are written the same way with or without a token: offline or without one they are the result, with
one ``upload_folder`` sends each as it is. The token is passed to the hub client and never written anywhere.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import DatasetCardData, HfApi

from ctllm.errors import UserError
from ctllm.models.registry import ModelSpec
from ctllm.publish.card import CARD_NAME, CURVES_NAME, build_card, counts_table, set_card_repos, write_card
from ctllm.publish.run_facts import RunFacts, read_run_facts
from ctllm.publish.run_model import merged_model, run_dir_of
from ctllm.runs import CONFIG_NAME, METRICS_NAME
from ctllm.settings import Settings

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Kept out of the model repository: the registry's local note (local paths) and the card, written apart.
NOT_UPLOADED = {"ctllm_run.json", CARD_NAME, CURVES_NAME}
RECORD_FILES = (CONFIG_NAME, METRICS_NAME, "eval.json")


@dataclass
class PublishFolders:
    repo: str
    model_dir: Path
    dataset_repo: str | None = None
    dataset_dir: Path | None = None
    private: bool = False
    urls: list[str] = field(default_factory=list)  # filled in by upload()

    def files(self) -> list[str]:
        """Every file that would be uploaded, as ``model/…`` and ``dataset/…`` paths, sorted."""
        found = []
        for folder in (self.model_dir, self.dataset_dir):
            if folder is not None:
                found += [f"{folder.name}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()]
        return sorted(found)


def check_repo_id(repo: str) -> str:
    if not REPO_ID.match(repo.strip()):
        raise UserError(f"--repo must look like OWNER/NAME (letters, digits, '-', '_', '.'), not {repo!r}")
    return repo.strip()


def dataset_repo_for(repo: str) -> str:
    return f"{repo}-pairs"


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _card_for(run_dir: Path, facts: RunFacts, repo: str, dataset_repo: str | None) -> str:
    """The run's card for these repositories: regenerated when it is the untouched generated card, else the user's
    edited text kept, with only its metadata pointed at the repositories."""
    path = write_card(run_dir)  # writes the curves, and a card when there is none
    if path.read_text(encoding="utf-8") == str(build_card(facts)):
        return str(build_card(facts, repo, dataset_repo))
    return str(set_card_repos(path, repo, dataset_repo))


def _copy_model(final: Path, target: Path, facts: RunFacts) -> None:
    for source in sorted(final.iterdir()):
        if source.is_file() and source.name not in NOT_UPLOADED:
            shutil.copy2(source, target / source.name)
    adapter_config = target / "adapter_config.json"
    if adapter_config.is_file() and facts.base_model:  # a hub id, not this machine's folder, for the base
        config = json.loads(adapter_config.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = facts.base_model
        adapter_config.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _dataset_card(facts: RunFacts, repo: str) -> str:
    data = DatasetCardData(
        language=facts.languages or None, tags=["dpo", "preference", "ctllm-dpo-studio"],
        task_categories=["text-generation"], pretty_name=f"{repo.split('/')[-1]} training pairs",
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train.parquet"},
                                                           {"split": "test", "path": "data/test.parquet"}]}],
    )
    body = "\n\n".join([
        f"# Training pairs of {repo}",
        f"The preference pairs the model [{repo}](https://huggingface.co/{repo}) was trained on with DPO "
        f"(run `{facts.name}`): `train` is the training snapshot, `test` the held-out pairs of its evaluation.",
        counts_table(facts.train_data, facts.eval_data),
        f"Snapshot hash: `{facts.resolved.get('data_hash', 'not recorded')}` (held-out: "
        f"`{facts.resolved.get('eval_data_hash', 'not recorded')}`).",
        "Columns: `prompt` (chat messages), `chosen`, `rejected`, `source`, `language`, `meta` (JSON text).",
    ])
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"


def prepare_folders(spec: ModelSpec, settings: Settings, repo: str, out: Path, *, with_data: bool = False,
                    merged: bool = False, private: bool = False) -> PublishFolders:
    """Write the exact folders that would be uploaded for the run of ``spec`` under ``out``."""
    repo = check_repo_id(repo)
    run_dir = run_dir_of(spec)
    facts = read_run_facts(run_dir)
    dataset_repo = dataset_repo_for(repo) if with_data else None
    card_text = _card_for(run_dir, facts, repo, dataset_repo)
    folders = PublishFolders(repo, _fresh(Path(out) / "model"), dataset_repo, None, private)
    shutil.rmtree(Path(out) / "dataset", ignore_errors=True)
    _copy_model(Path(spec.path), folders.model_dir, facts)
    (folders.model_dir / CARD_NAME).write_text(card_text, encoding="utf-8")
    shutil.copy2(Path(spec.path) / CURVES_NAME, folders.model_dir / CURVES_NAME)
    records = folders.model_dir / "ctllm"
    records.mkdir()
    for name in RECORD_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, records / name)
    if merged and spec.is_adapter:
        model, tokenizer = merged_model(spec, settings)
        model.save_pretrained(folders.model_dir / "merged", safe_serialization=True)
        tokenizer.save_pretrained(folders.model_dir / "merged")
    if with_data:
        if not (run_dir / "data.parquet").is_file():
            raise UserError(f"{run_dir / 'data.parquet'} is missing: the run kept no snapshot to publish")
        folders.dataset_dir = _fresh(Path(out) / "dataset")
        (folders.dataset_dir / "data").mkdir()
        shutil.copy2(run_dir / "data.parquet", folders.dataset_dir / "data" / "train.parquet")
        if (run_dir / "eval.parquet").is_file():
            shutil.copy2(run_dir / "eval.parquet", folders.dataset_dir / "data" / "test.parquet")
        (folders.dataset_dir / CARD_NAME).write_text(_dataset_card(facts, repo), encoding="utf-8")
    return folders


def upload(folders: PublishFolders, token: str) -> PublishFolders:
    """Create the repositories (if needed) and upload each folder as it is."""
    if not token.strip():
        raise UserError("uploading needs a hub token with write access (HF_TOKEN, or `hf auth login`)")
    api = HfApi(token=token)
    pending = [(folders.repo, "model", folders.model_dir)]
    if folders.dataset_dir is not None and folders.dataset_repo:
        pending.append((folders.dataset_repo, "dataset", folders.dataset_dir))
    for repo_id, repo_type, folder in pending:
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=folders.private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder,
                                     commit_message="Publish from CT-LLM DPO Studio")
        except Exception as error:  # network, auth and quota errors all surface here; the token is not in them
            raise UserError(f"upload of {folder} to {repo_type} {repo_id} failed: {error}") from None
        folders.urls.append(str(getattr(info, "repo_url", "") or f"https://huggingface.co/{repo_id}"))
    return folders

