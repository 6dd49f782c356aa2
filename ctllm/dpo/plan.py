"""The step plan: every optimizer step of a run and each process's micro-batches, fixed up front by the seed.

One optimizer step takes ``batch_size x grad_accum x processes`` pairs, so the step contents depend only on that
product: batch 8 x accumulation 1 trains exactly like batch 1 x accumulation 8, two processes like one with the
same global batch, and a resumed run like an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ctllm.dpo.batching import length_grouped_batches
from ctllm.dpo.config import TrainConfig
from ctllm.dpo.shared_prompt import tokens_seen
from ctllm.dpo.tokenize import TokenizedPair


@dataclass(frozen=True)
class PlannedStep:
    epoch: int
    positions: tuple[int, ...]  # indices into the tokenized train items
    epoch_progress: float  # epoch as a float after this step (TRL's "epoch")


@dataclass(frozen=True)
class Share:
    """How one process cuts its share of a step: its rank among ``world`` and the micro-batch bounds."""

    world: int
    rank: int
    batch_size: int
    max_tokens: int = 0
    shared: bool = False

    @classmethod
    def of(cls, config: TrainConfig, world: int, rank: int, shared: bool) -> Share:
        return cls(world, rank, config.batch_size, config.max_forward_tokens, shared)


def plan_steps(items: Sequence[TokenizedPair], config: TrainConfig, world_size: int) -> list[PlannedStep]:
    """Every optimizer step of the run, in order; a function of the seed, the data and the global batch only."""
    global_batch = config.batch_size * config.grad_accum * world_size
    steps: list[PlannedStep] = []
    epoch = 0
    while True:
        batches = length_grouped_batches(items, global_batch, config.seed, epoch)
        # Every process needs at least one pair of the step (a short last step may not have enough).
        batches = [b for b in batches if len(b) >= world_size]
        for k, batch in enumerate(batches):
            steps.append(PlannedStep(epoch, tuple(batch), epoch + (k + 1) / len(batches)))
        epoch += 1
        if not batches:
            break
        if config.max_steps and len(steps) >= config.max_steps:
            return steps[: config.max_steps]
        if not config.max_steps and epoch >= config.epochs:
            return steps
    return steps


def rank_micro_batches(step: PlannedStep, items: Sequence[TokenizedPair], share: Share) -> list[list[int]]:
    """This process's share of a step, cut into micro-batches of similar lengths (little padding).

    A micro-batch holds at most ``batch_size`` pairs and, with ``max_tokens``, at most that many tokens (but at
    least one pair): a bound on activation memory that leaves the step's gradient unchanged.
    """
    ordered = sorted(step.positions, key=lambda p: -items[p].length)
    mine = ordered[share.rank :: share.world]
    batches: list[list[int]] = [[]]
    for position in mine:
        current = batches[-1]
        grown = [items[p] for p in current + [position]]
        too_many = len(current) >= share.batch_size
        if current and (too_many or (share.max_tokens and tokens_seen(grown, share.shared) > share.max_tokens)):
            batches.append([position])
        else:
            current.append(position)
    return [b for b in batches if b]


def reference_layout(steps: list[PlannedStep], items: Sequence[TokenizedPair], share: Share) -> list[list[int]]:
    """The first epoch's micro-batches of every process, then any pair they leave out (max_steps, a short last step).

    Reference log-probs computed in the very batches the policy sees give bit-identical numbers at step 1, so a
    run starts at exactly ln 2 with accuracy 0, as without precomputation. ``share``'s rank is not used.
    """
    batches: list[list[int]] = []
    for step in (s for s in steps if s.epoch == 0):
        for rank in range(share.world):
            batches += rank_micro_batches(step, items, replace(share, rank=rank))
    covered = {p for batch in batches for p in batch}
    rest = [p for p in range(len(items)) if p not in covered]
    size = share.batch_size
    return batches + [rest[i: i + size] for i in range(0, len(rest), size)]
