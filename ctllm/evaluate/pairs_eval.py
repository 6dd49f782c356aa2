"""Held-out preference pairs: where they come from, and their log-probs under a model and its reference."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.evaluate.metrics import PairLogps, grouped, pair_metrics
from ctllm.pairs.readers import read_pairs
from ctllm.pairs.schema import Pair
from ctllm.pairs.store import Store
from ctllm.settings import Settings

COLLECTION_PREFIX = "collection:"
ALL_SPLITS = ("", "all", "*")


def load_eval_pairs(source: str, settings: Settings, split: str | None) -> tuple[list[Pair], str]:
    """(pairs, a description) from a pairs file or a store collection (``NAME`` or ``collection:NAME``), keeping
    only ``split`` (None / "all": every pair). A collection gives its pairs with annotators' labels applied."""
    wanted = None if split is None or split in ALL_SPLITS else split
    path = Path(source).expanduser()
    if not source.startswith(COLLECTION_PREFIX) and (path.is_file() or path.is_dir()):
        result = read_pairs(path, max_field_chars=settings.max_field_chars)
        for error in result.errors[:5]:
            print(f"skipped: {error}", file=sys.stderr)
        pairs = result.pairs
        if wanted is not None:
            pairs = [p for p in result.pairs if str(p.meta.get("split", "")) == wanted]
            if not pairs:
                found = sorted({str(p.meta.get("split", "")) or "(none)" for p in result.pairs})
                raise UserError(f"--pairs {source}: no pair has split {wanted!r} (splits found: {', '.join(found)}); "
                                "use --split all to evaluate on every pair")
        return pairs, f"{path.name}" + (f" (split {wanted})" if wanted else "")
    name = source.removeprefix(COLLECTION_PREFIX).strip()
    if settings.db_path.is_file():
        with Store(settings.db_path) as store:
            collection = store.find_collection(name) or (store.find_collection(int(name)) if name.isdigit() else None)
            if collection is not None:
                pairs = store.collection_pairs(collection, wanted)
                if not pairs:
                    raise UserError(f"--pairs {source}: collection {collection.name!r} has no usable pairs"
                                    + (f" in split {wanted!r} (use --split all for every pair)" if wanted else ""))
                return pairs, f"collection {collection.name}" + (f" (split {wanted})" if wanted else "")
    raise UserError(f"--pairs {source!r}: no such file, and no collection of that name in {settings.db_path}")


def score_pair_logps(
    model: Any, reference: Any, pairs: Sequence[Pair], max_length: int, batch_size: int, progress: Any = None
) -> list[PairLogps | None]:
    """Per pair (in order): its log-probs under ``model`` and ``reference`` (LoadedModels sharing a tokenizer),
    tokenized as in training; None for a pair whose prompt alone fills ``max_length``."""
    # Lazy: importing ctllm.dpo.pair_scores (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.dpo.pair_scores import score_pairs
    from ctllm.models.scoring import check_same_tokenizer

    check_same_tokenizer(model, reference)
    scores, _ = score_pairs(model.model, reference.model, model.tokenizer, pairs, 1.0, max_length, batch_size,
                            progress)
    found: list[PairLogps | None] = [None] * len(pairs)
    for s in scores:
        found[s.index] = PairLogps(s.chosen_logp, s.rejected_logp, s.ref_chosen_logp, s.ref_rejected_logp,
                                   s.chosen_tokens, s.rejected_tokens)
    return found


def pairs_section(pairs: Sequence[Pair], logps: Sequence[PairLogps | None], beta: float) -> dict[str, Any]:
    """The pairs part of an evaluation: overall, per category (meta ``category``) and per language."""
    scored = [(pair, row) for pair, row in zip(pairs, logps, strict=True) if row is not None]
    rows = [row for _, row in scored]
    by_category = grouped(scored, lambda item: item[0].meta.get("category"))
    by_language = grouped(scored, lambda item: item[0].language)
    return {
        "count": len(pairs),
        "scored": len(rows),
        "dropped": len(pairs) - len(rows),
        "overall": pair_metrics(rows, beta),
        "by_category": {name: pair_metrics([row for _, row in items], beta) for name, items in by_category.items()},
        "by_language": {name: pair_metrics([row for _, row in items], beta) for name, items in by_language.items()},
    }
