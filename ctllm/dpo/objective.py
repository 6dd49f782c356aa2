"""The DPO objective on tokenized pairs: the policy's forward, the reference's log-probs, the loss and metrics,
for one micro-batch of a training step or over the held-out pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object

from ctllm.dpo.batching import length_grouped_batches
from ctllm.dpo.losses import LossConfig, compute_loss
from ctllm.dpo.metric_sums import MetricSums
from ctllm.dpo.shared_prompt import pair_forward, tokens_seen
from ctllm.dpo.tokenize import TokenizedPair

# One row a pair: (index, chosen, rejected, ref chosen, ref rejected log-probs, chosen tokens, rejected tokens).
Collected = list[tuple]


@dataclass
class Reference:
    """Where the reference log-probs come from; ``description`` goes into config.yaml and status.json."""

    description: str
    identity: str = ""  # what the reference cache key names: spec, folder and its time stamp
    model: torch.nn.Module | None = None  # a separate frozen model
    adapter_disabled: bool = False  # the policy with its LoRA adapter disabled
    tables: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # precomputed, by split
    free: bool = False  # a reference-free loss: no reference model and no reference pass


@dataclass
class Objective:
    accelerator: Any
    reference: Reference
    loss: LossConfig
    pad_id: int
    shared: bool  # the prompt computed once per pair (see ctllm.dpo.shared_prompt)
    keys: list[str]  # the metric names, the same on every process
    packed: bool = False  # the pairs in one padding-free row (see ctllm.dpo.packing)

    def reference_logps(self, split: str, items: Sequence[TokenizedPair], policy: Any) -> tuple[torch.Tensor, ...]:
        """(chosen, rejected, chosen_tokens, rejected_tokens) for ``items``; ``policy`` unwrapped."""
        table = self.reference.tables.get(split)
        if table is not None:
            index = torch.tensor([item.index for item in items], device=self.accelerator.device)
            return tuple(table[key][index] for key in ("chosen", "rejected", "chosen_tokens", "rejected_tokens"))
        with torch.no_grad(), self.accelerator.autocast():
            if self.reference.adapter_disabled:
                with policy.disable_adapter():
                    out = pair_forward(policy, items, self.pad_id, self.shared, self.packed)
            else:
                out = pair_forward(self.reference.model, items, self.pad_id, self.shared, self.packed)
        return out.chosen_logps.detach(), out.rejected_logps.detach(), out.chosen_tokens, out.rejected_tokens

    def micro_batch(self, model: Any, split: str, items: Sequence[TokenizedPair], collect: Collected | None = None,
                    ) -> tuple[torch.Tensor, dict[str, float], dict[str, int], int]:
        """Forward the policy (and the reference if not precomputed) on one micro-batch; (loss, metrics, token
        counts, tokens seen).

        The tokens seen are those of the pairs' rows (prompt twice), whichever forward ran: tokens/s compare across
        engines. ``collect`` gets one row per pair (see ``Collected``).
        """
        out = pair_forward(model, items, self.pad_id, self.shared, self.packed)
        if self.reference.free:  # the held-out rows then carry NaN for the reference log-probs
            ref_c = ref_r = None
        else:
            ref_c, ref_r, _, _ = self.reference_logps(split, items, self.accelerator.unwrap_model(model))
        loss, metrics = compute_loss(out, ref_c, ref_r, self.loss)
        if collect is not None:
            if ref_c is None or ref_r is None:
                ref_c = ref_r = torch.full_like(out.chosen_logps, float("nan"))
            columns = [t.detach().float().cpu().tolist() for t in (out.chosen_logps, out.rejected_logps, ref_c, ref_r)]
            counts = [t.cpu().tolist() for t in (out.chosen_tokens, out.rejected_tokens)]
            collect += [(item.index, *(c[i] for c in columns), *(int(n[i]) for n in counts))
                        for i, item in enumerate(items)]
        counts = {"chosen_tokens": int(out.chosen_tokens.sum()), "rejected_tokens": int(out.rejected_tokens.sum())}
        return loss, metrics, counts, tokens_seen(items, shared=False)

    def evaluate(self, model: Any, items: Sequence[TokenizedPair], batch_size: int,
                 collect: Collected | None = None) -> dict[str, float]:
        """Held-out metrics (``eval_`` prefixed) over all ``items``, batches shared round-robin by the processes.

        ``collect``: gets every pair's row (see ``Collected``), from all processes.
        """
        accelerator = self.accelerator
        unwrapped = accelerator.unwrap_model(model)
        batches = length_grouped_batches(items, batch_size, seed=0, epoch=0, shuffle=False)
        sums = MetricSums()
        rows: Collected | None = [] if collect is not None else None
        was_training = unwrapped.training
        unwrapped.eval()
        with torch.no_grad():
            for i, positions in enumerate(batches):
                if i % accelerator.num_processes != accelerator.process_index:
                    continue
                with accelerator.autocast():
                    _, metrics, counts, tokens = self.micro_batch(unwrapped, "eval", [items[p] for p in positions],
                                                                  rows)
                sums.add(metrics, len(positions), counts, tokens)
            idle = len(batches) % accelerator.num_processes
            if getattr(accelerator, "is_fsdp2", False) and idle and accelerator.process_index >= idle:
                with accelerator.autocast():  # FSDP forwards are collective: one more, uncounted, as the others do
                    self.micro_batch(unwrapped, "eval", [items[p] for p in batches[0]])
        if was_training:
            unwrapped.train()
        means, _, _ = sums.reduce(accelerator, self.keys)
        if collect is not None and rows is not None:
            if accelerator.num_processes > 1:
                rows = gather_object(rows)
            collect += rows
        return {f"eval_{k}": v for k, v in means.items()}
