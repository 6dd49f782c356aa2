"""``python -m ctllm stats [--collection NAME]``: counts by collection, language, label state; lengths; agreement."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ctllm.pairs.agreement import collection_stats
from ctllm.pairs.store import Store
from ctllm.settings import Settings

NAME = "stats"
HELP = "counts by collection, language and label state, length percentiles, duplicates and agreement"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", help="one collection (default: all)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.ensure_dirs().db_path)
    names = [store.get_collection(args.collection).name] if args.collection else [
        c.name for c in store.list_collections()]
    stats = [collection_stats(store, name) for name in names]
    if args.json:
        print(json.dumps([_plain(s) for s in stats], ensure_ascii=False, indent=2))
        return 0
    if not stats:
        print(f"no collections yet in {settings.db_path}")
    for item in stats:
        print(format_stats(item))
        print()
    return 0


def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    report = stats["agreement"]
    return stats | {
        "agreement": {
            "summary": str(report),
            "annotators": report.annotators,
            "cohen": {" / ".join(k): {"kappa": v[0], "shared": v[1]} for k, v in report.cohen.items()},
            "fleiss": report.fleiss,
            "source_agreement": report.source_agreement,
        }
    }


def format_stats(s: dict[str, Any]) -> str:
    def join(counts: dict[str, int]) -> str:
        return ", ".join(f"{k or '?'} {v:,}" for k, v in counts.items()) or "-"

    lengths = s["lengths"]
    lines = [
        f"{s['collection']} ({s['kind']}): {s['pairs']:,} pairs, {s['edited']:,} edited",
        f"  language: {join(s['by_language'])}",
        f"  split: {join(s['by_split'])}",
        f"  source: {join(s['by_source'])}",
        f"  labels: {s['labelled']:,} labelled, {s['unlabelled']:,} unlabelled, "
        f"{s['disagreements']:,} with disagreement",
    ]
    for part in ("prompt", "chosen", "rejected"):
        p = lengths["percentiles"].get(part) or {}
        if p:
            lines.append(f"  {part} characters: " + ", ".join(f"{k} {v:,}" for k, v in p.items()))
    if lengths["chosen_longer_share"] is not None:
        lines.append(f"  chosen is longer in {lengths['chosen_longer_share']:.0%} of pairs "
                     f"(mean {lengths['mean_chosen']:,.0f} vs {lengths['mean_rejected']:,.0f} characters)")
    d = s["duplicates"]
    lines.append(f"  duplicates: {d['prompts_in_several_pairs']:,} prompts in several pairs "
                 f"({d['pairs_sharing_a_prompt']:,} pairs), {d['pairs_also_in_other_collections']:,} also in other "
                 f"collections, {d['skipped_at_import']:,} skipped at import")
    lines.append(f"  agreement: {s['agreement']}")
    return "\n".join(lines)
