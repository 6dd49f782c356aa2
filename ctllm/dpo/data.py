"""A run's pairs: read from a file or a collection, split into train and held-out, snapshotted, tokenized."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctllm.dpo.config import COLLECTION_PREFIX, TrainConfig, merge
from ctllm.dpo.run_state import Run
from ctllm.dpo.snapshot import pairs_hash, read_snapshot, write_snapshot
from ctllm.dpo.tokenize import TokenizedPair, tokenize_pairs
from ctllm.errors import UserError
from ctllm.pairs.readers import read_pairs
from ctllm.pairs.schema import Pair
from ctllm.pairs.store import Store
from ctllm.paths import REPO_ROOT
from ctllm.settings import Settings


def _find_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # presets name shipped assets relative to the repository
    if not path.exists():
        raise UserError(f"config field 'data': file {text!r} does not exist")
    return path


def load_pairs(source: str, settings: Settings, field_name: str = "data") -> list[Pair]:
    """Pairs from a file any reader accepts, or from ``collection:NAME`` in the store."""
    if source.startswith(COLLECTION_PREFIX):
        name = source[len(COLLECTION_PREFIX):].strip()
        if not settings.db_path.exists():
            raise UserError(f"config field '{field_name}': there is no pairs store at {settings.db_path}")
        with Store(settings.db_path) as store:
            if store.find_collection(name) is None:
                known = ", ".join(c.name for c in store.list_collections()) or "none"
                raise UserError(f"config field '{field_name}': no collection named {name!r} (collections: {known})")
            pairs = store.collection_pairs(name)  # latest versions with annotators' labels applied
        if not pairs:
            raise UserError(f"config field '{field_name}': collection {name!r} holds no pairs")
        return pairs

    path = _find_file(source)
    result = read_pairs(path)
    if not result.pairs:
        detail = f"; first problem: {result.errors[0]}" if result.errors else ""
        raise UserError(f"config field '{field_name}': {path} holds no usable pairs{detail}")
    return list(result.pairs)


def split_eval(pairs: list[Pair], config: TrainConfig, settings: Settings) -> tuple[list[Pair], list[Pair], str]:
    """(train pairs, held-out pairs, how the split was made), both limited to ``config.languages`` if given."""
    if config.languages:
        train, held, how = split_eval(pairs, merge(config, {"languages": []}), settings)
        keep = set(config.languages)
        train, held = [p for p in train if p.language in keep], [p for p in held if p.language in keep]
        if not train:
            raise UserError(f"config field 'languages' = {config.languages}: no training pair is in these languages")
        return train, held, f"{how}; languages {', '.join(config.languages)} only"
    if config.eval_data:
        return pairs, load_pairs(config.eval_data, settings, "eval_data"), f"eval_data {config.eval_data}"
    held = [p for p in pairs if str(p.meta.get("split", "")) == config.eval_split]
    if held:
        rest = [p for p in pairs if str(p.meta.get("split", "")) != config.eval_split]
        return rest, held, f"pairs with split == {config.eval_split!r}"
    if config.eval_fraction <= 0 or len(pairs) < 2:
        return pairs, [], "no held-out pairs"
    count = max(1, round(len(pairs) * config.eval_fraction))
    chosen = set(random.Random(f"ctllm-eval:{config.seed}").sample(range(len(pairs)), count))
    train = [p for i, p in enumerate(pairs) if i not in chosen]
    held = [p for i, p in enumerate(pairs) if i in chosen]
    return train, held, f"{config.eval_fraction:.0%} of the pairs drawn with seed {config.seed}"


@dataclass
class RunData:
    train_pairs: list[Pair]
    eval_pairs: list[Pair]
    info: dict[str, Any]  # hashes, counts and how the split was made (config.yaml's resolved block)
    items: list[TokenizedPair] = field(default_factory=list)  # filled in by ``tokenize_data``
    eval_items: list[TokenizedPair] = field(default_factory=list)
    dropped: int = 0
    truncated: int = 0


def load_data(run: Run) -> RunData:
    """Train and held-out pairs. A new run snapshots them into the run dir; a resumed one reads its snapshots."""
    run_dir = run.run_dir
    from_snapshot = run.resume and run_dir.data_path.exists()
    if from_snapshot:
        train_pairs = read_snapshot(run_dir.data_path)
        eval_pairs = read_snapshot(run_dir.eval_data_path) if run_dir.eval_data_path.exists() else []
        how = "read back from the run's snapshots"
    else:
        train_pairs, eval_pairs, how = split_eval(load_pairs(run.config.data, run.settings), run.config, run.settings)
    info = {"data_hash": pairs_hash(train_pairs), "eval_data_hash": pairs_hash(eval_pairs) if eval_pairs else None,
            "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "eval_split": how}
    if run.is_main and not from_snapshot:
        write_snapshot(train_pairs, run_dir.data_path)
        if eval_pairs:
            write_snapshot(eval_pairs, run_dir.eval_data_path)
    run.log.info("data: %d train pairs, %d held out (%s); data hash %s", len(train_pairs), len(eval_pairs), how,
                 info["data_hash"][:16])
    return RunData(train_pairs, eval_pairs, info)


def tokenize_data(run: Run, data: RunData, tokenizer: Any) -> None:
    """Fill in ``data``'s tokenized items; fails when every training pair was dropped."""
    config = run.config
    max_prompt = config.max_prompt_length or None
    tokenized = tokenize_pairs(tokenizer, data.train_pairs, config.max_length, max_prompt)
    eval_tokenized = tokenize_pairs(tokenizer, data.eval_pairs, config.max_length, max_prompt) if data.eval_pairs \
        else None
    data.items, data.dropped, data.truncated = tokenized.items, tokenized.dropped, tokenized.truncated
    data.eval_items = eval_tokenized.items if eval_tokenized else []
    run.log.info("train: %s", tokenized.summary())
    if eval_tokenized:
        run.log.info("eval: %s", eval_tokenized.summary())
    if not data.items:
        raise UserError(f"config field 'max_length' = {config.max_length}: every training pair was dropped "
                        "(the prompts alone fill max_length)")
    data.info.update(dropped_pairs=tokenized.dropped, truncated_pairs=tokenized.truncated,
                     eval_dropped_pairs=eval_tokenized.dropped if eval_tokenized else 0)
