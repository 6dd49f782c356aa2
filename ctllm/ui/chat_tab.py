"""Chat tab: the SFT (reference) model on the left, the DPO model on the right, one input for both.

One send is one streaming event: its first update echoes the message in both panes at once, then both answers
stream together (a thread each on a CPU; elsewhere one batch of two when both sides are the same loaded model, or
the SFT model and a LoRA run on it), then each gets its implicit reward
β·(log π_dpo − log π_sft). A vote saves a preference pair into the "chat votes" collection.

Each side keeps its own conversation: a model sees its own earlier answers, never the other side's, and a pane
shows only what its own model wrote. Changing either model (or blind mode) starts a new conversation.

Handlers return ``{name: value}`` dicts; :func:`by_component` turns the names into the tab's components.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import gradio as gr

from ctllm.errors import UserError
from ctllm.evaluate import EVAL_JSON, before_after, headline, load_result
from ctllm.evaluate.report import BEFORE_AFTER
from ctllm.models.kv_reuse import CHAT_CACHES
from ctllm.models.registry import LATEST_RUN, RUN_PREFIX, list_models, resolve_spec, run_names
from ctllm.pairs.schema import Message, Pair
from ctllm.pairs.store import DuplicatePair
from ctllm.runs import read_config
from ctllm.ui.auth import Role, User, require
from ctllm.ui.context import CHAT_VOTES_COLLECTION, AppContext
from ctllm.ui.handlers import bind, keyed, named_inputs
from ctllm.ui.i18n import t
from ctllm.ui.render import chat_display, inert_inline

SIDES = ("left", "right")
VOTES = {"left": "left better", "right": "right better", "tie": "tie", "bothbad": "both bad"}
STORE_VERDICTS = {"left better": "first", "right better": "second", "tie": "tie", "both bad": "both_bad"}
DEFAULT_BETA = 0.1
POLL_SECONDS = 3.0  # how often an open Chat tab looks for newly finished runs
STREAM_UPDATE_S = 0.05  # at most ~20 screen updates a second per event (the first token always goes at once)
VOTE_KEYS = tuple(f"vote_{key}" for key in VOTES)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    seed: int = 0


@dataclass(frozen=True)
class TurnSettings:
    """What a turn is generated with, as the form holds it (checked by :meth:`ChatHandlers.begin_turn`). Each field
    is named after the tab's component that gives it, so the event's inputs are these fields' components."""

    sft_model: str
    dpo_model: str
    blind: bool = False
    beta: float = DEFAULT_BETA
    temperature: float = 0.7
    top_p: float = 0.9
    max_new: int = 256
    seed: float | None = None  # below 0 (or None): a fresh seed for each turn


SETTING_INPUTS = tuple(f.name for f in fields(TurnSettings))
MESSAGE_INPUTS = ("text", "turn", "left", "right")  # the message, and the conversation it continues
FORM_INPUTS = (*MESSAGE_INPUTS, *SETTING_INPUTS)
# The names API clients call /chat_send with, where they differ from the components' (kept from earlier releases).
API_NAMES = {"sft_model": "sft_spec", "dpo_model": "dpo_spec", "max_new": "max_new_tokens"}


@dataclass(frozen=True)
class Turn:
    """The current exchange: the user's message and what both sides answer it with."""

    user: str = ""  # this turn's user message ("" before the first send)
    sft_spec: str = ""
    dpo_spec: str = ""
    swapped: bool = False  # the DPO model on the left (blind mode's shuffle, drawn once per conversation)
    blind: bool = False
    beta: float = DEFAULT_BETA
    sampling: Sampling = field(default_factory=Sampling)
    voted: str = ""
    conversation: tuple[str, ...] = ()  # the concrete models and blind flag the conversation started with
    chat_id: str = ""  # names this conversation's kept KV caches (ctllm.models.kv_reuse)

    def role(self, which: str) -> str:
        return ("dpo" if which == "left" else "sft") if self.swapped else ("sft" if which == "left" else "dpo")

    def spec(self, role: str) -> str:
        return self.sft_spec if role == "sft" else self.dpo_spec

    @property
    def assign(self) -> dict[str, str]:
        return {which: self.role(which) for which in SIDES}


@dataclass(frozen=True)
class Side:
    """One side's model's own conversation (earlier turns with ITS answers) and its answer to this turn."""

    history: tuple[Message, ...] = ()
    answer: str = ""
    seed: int | None = None
    done: bool = False
    reward: float | None = None
    error: str = ""

    def messages(self, user: str) -> list[Message]:
        """What this side's model is asked: its own conversation so far plus the new user message."""
        return [*self.history, Message(role="user", content=user)]

    def next_turn(self) -> Side:
        """A fresh side for the next turn, whose history is this turn's exchange as THIS model answered it."""
        return Side(history=self.history)


def continued(side: Side, user: str) -> Side:
    """``side`` with the finished turn (``user`` and its answer) moved into its own history."""
    if not user or not side.answer:  # no answer to keep: drop the unanswered user turn, so roles keep alternating
        return side.next_turn()
    exchange = (Message(role="user", content=user), Message(role="assistant", content=side.answer))
    return Side(history=(*side.history, *exchange))


def side_display(turn: Turn, side: Side) -> list[dict[str, str]]:
    messages = list(side.history)
    if turn.user:
        messages.append(Message(role="user", content=turn.user))
        if side.answer:
            messages.append(Message(role="assistant", content=side.answer))
    return chat_display(messages)


def model_names(turn: Turn) -> tuple[str, str]:
    """Headers above the two chats: model names, hidden as Model A / B in blind mode until the vote."""
    if turn.blind and not turn.voted:
        return f"**{t('chat.model_a')}**", f"**{t('chat.model_b')}**"
    names = [f"**{turn.role(w).upper()}** · {inert_inline(turn.spec(turn.role(w)) or '?')}" for w in SIDES]
    return names[0], names[1]


def reward_line(turn: Turn, side: Side) -> str:
    if side.error:
        return f"⚠ {inert_inline(side.error)}"
    if side.reward is None:
        return ""
    if turn.blind and not turn.voted:
        return t("chat.reward_after_vote")
    return t("chat.reward").format(reward=f"{side.reward:+.3f}", beta=f"{turn.beta:g}")


def tally_text(tally: dict[str, int]) -> str:
    decided = tally["dpo"] + tally["sft"]
    rate = f"{tally['dpo'] / decided:.0%}" if decided else "–"
    return t("chat.tally").format(rate=rate, dpo=tally["dpo"], sft=tally["sft"], tie=tally["tie"],
                                  both_bad=tally["both bad"])


def run_beta(ctx: AppContext, spec: str) -> float:
    """β of the run behind ``spec`` (run:NAME or latest-run), else the default."""
    concrete = concrete_spec(ctx, spec)
    if not concrete.startswith(RUN_PREFIX):
        return DEFAULT_BETA
    beta = read_config(ctx.settings.runs_dir / concrete[len(RUN_PREFIX) :]).get("beta")
    return float(beta) if isinstance(beta, (int, float)) and beta > 0 else DEFAULT_BETA


def concrete_spec(ctx: AppContext, spec: str) -> str:
    """``latest-run`` as the run it names now (run:NAME); any other spec as it is."""
    if spec != LATEST_RUN:
        return spec
    names = run_names(ctx.settings)
    return RUN_PREFIX + names[0] if names else spec


def run_numbers(ctx: AppContext, name: str) -> str:
    """A run's before/after numbers from its end-of-run evaluation ("SFT → DPO pref. acc. 45% → 70% · ..."),
    or "" when it has none."""
    result = load_result(ctx.settings.runs_dir / name)
    numbers = headline(result) if result else {}
    parts = [f"{t('chat.metric.' + key)} {before_after(numbers, key)}" for key, _ in BEFORE_AFTER
             if f"{key}/sft" in numbers or f"{key}/dpo" in numbers]
    return "SFT → DPO " + " · ".join(parts) if parts else ""


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, spec) of every model to offer; a run's label carries its before/after numbers."""
    choices = []
    names = run_names(ctx.settings)
    numbers = {name: run_numbers(ctx, name) for name in names}
    if names:
        latest = t("chat.latest_run").format(name=names[0])
        choices.append((f"{latest} · {numbers[names[0]]}" if numbers[names[0]] else latest, LATEST_RUN))
    for spec in list_models(ctx.settings):
        shown = numbers.get(spec.ref[len(RUN_PREFIX) :], "") if spec.ref.startswith(RUN_PREFIX) else ""
        choices.append((f"{spec.label} · {shown}" if shown else spec.label, spec.ref))
    return choices


def default_dpo_spec(ctx: AppContext) -> str:
    """The latest finished run when there is one, else the configured DPO model, else the SFT model."""
    if run_names(ctx.settings):
        return LATEST_RUN
    configured = ctx.settings.dpo_model
    if configured and configured != LATEST_RUN:
        try:
            resolve_spec(configured, ctx.settings)
            return configured
        except UserError:
            pass
    return ctx.settings.sft_model


def runs_signature(ctx: AppContext) -> str:
    """A cheap fingerprint of the finished runs and their evaluation files: it changes when the picker must."""
    parts = []
    for name in run_names(ctx.settings):
        result = ctx.settings.runs_dir / name / EVAL_JSON
        parts.append(f"{name}:{result.stat().st_mtime_ns if result.exists() else 0}")
    return "|".join(parts) or "-"


def chosen_dpo(ctx: AppContext, sft: str, dpo: str) -> str:
    """The DPO side to show: the newest finished run when the side is empty or still the SFT model."""
    if (not dpo or dpo == sft) and run_names(ctx.settings):
        return LATEST_RUN
    return dpo or default_dpo_spec(ctx)


def note_text(ctx: AppContext, sft: str, dpo: str, lang: str | None = None) -> str:
    """The note above the chats, from the current selection: warns when both sides are one model."""
    if not sft or not dpo or concrete_spec(ctx, sft) != concrete_spec(ctx, dpo):
        return ""
    same = t("chat.same_model", lang).format(model=inert_inline(concrete_spec(ctx, dpo)))
    if not run_names(ctx.settings):
        return f"{same} {t('chat.no_run_yet', lang)}"
    return same


class RateLimiter:
    """At most ``per_minute`` generations per user in any 60 s (a turn starts two; it counts once)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, user: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._times.setdefault(user, deque())
            while times and now - times[0] >= 60:
                times.popleft()
            if self.per_minute > 0 and len(times) >= self.per_minute:
                wait = 60 - (now - times[0])
                raise gr.Error(t("chat.rate_limit").format(limit=self.per_minute, wait=f"{wait:.0f}"))
            times.append(now)


def served_models(ctx: AppContext) -> set[str]:
    """Specs any annotator may chat with: the configured ones and finished runs (loading anything else, such
    as a hub download, is changing the models served: an admin's action)."""
    served = {ctx.settings.sft_model, ctx.settings.dpo_model, default_dpo_spec(ctx)}
    if run_names(ctx.settings):
        served.add(LATEST_RUN)
    served.update(RUN_PREFIX + name for name in run_names(ctx.settings))
    return served


def check_model_allowed(ctx: AppContext, user: User, spec: str) -> None:
    if not user.can(Role.ADMIN) and spec not in served_models(ctx):
        raise gr.Error(t("chat.not_served").format(model=inert_inline(spec)))


def vote_updates(enabled: bool) -> dict[str, Any]:
    return {key: gr.update(interactive=enabled) for key in VOTE_KEYS}


def votes_ready(turn: Turn, left: Side, right: Side) -> bool:
    """Votes open once both sides ended (an error ends a side too; :meth:`ChatHandlers.vote` explains)."""
    return bool(turn.user and not turn.voted and left.done and right.done)


@dataclass
class ChatHandlers:
    ctx: AppContext
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.ctx.settings.generation_rate_per_minute)

    # --- a turn: echo the message, stream both answers, score them --------------------------------------
    def send(
        self, text: str, turn: Turn, left: Side, right: Side, form: TurnSettings, request: gr.Request | None = None
    ) -> Iterator[dict[str, Any]]:
        """Start a turn: its first update shows the message in both panes, the next ones stream the answers."""
        turn, sides = self.begin_turn(text, turn, left, right, form, request)
        names = model_names(turn)
        yield {
            "turn": turn,
            **{which: sides[which] for which in SIDES},
            "text": "",
            **{f"{which}_bot": side_display(turn, sides[which]) for which in SIDES},
            "left_name": names[0],
            "right_name": names[1],
            **{f"{which}_reward": "" for which in SIDES},
            **vote_updates(False),
        }
        yield from self._answer(turn, sides, SIDES)

    def begin_turn(
        self, text: str, turn: Turn, left: Side, right: Side, form: TurnSettings, request: gr.Request | None = None
    ) -> tuple[Turn, dict[str, Side]]:
        """Check and record the new user message: the new turn, and each side carrying its own history."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        text = (text or "").strip()
        if not text:
            raise gr.Error(t("chat.type_first"))
        sft_spec, dpo_spec, blind, seed = form.sft_model, form.dpo_model, form.blind, form.seed
        if not sft_spec or not dpo_spec:
            raise gr.Error(t("chat.pick_models"))
        for spec in (sft_spec, dpo_spec):
            check_model_allowed(self.ctx, user, spec)
        self.limiter.check(user.name)
        limit = self.ctx.settings.max_new_tokens_limit
        if not 1 <= int(form.max_new) <= limit:
            raise gr.Error(t("chat.max_new_range").format(limit=limit))
        turn = turn or Turn()
        conversation = (concrete_spec(self.ctx, sft_spec), concrete_spec(self.ctx, dpo_spec), str(bool(blind)))
        if turn.user and conversation == turn.conversation:
            swapped, chat_id = turn.swapped, turn.chat_id
            left, right = continued(left, turn.user), continued(right, turn.user)
        else:  # a new conversation: the models (or blind mode) changed, or this is the first message
            CHAT_CACHES.forget(turn.chat_id)
            swapped, chat_id = bool(blind) and random.random() < 0.5, uuid.uuid4().hex
            left, right = Side(), Side()
        shared_seed = int(seed) if seed is not None and seed >= 0 else random.randrange(2**31)
        turn = Turn(
            user=text,
            sft_spec=sft_spec,
            dpo_spec=dpo_spec,
            swapped=swapped,
            blind=bool(blind),
            beta=float(form.beta) if form.beta and form.beta > 0 else DEFAULT_BETA,
            sampling=Sampling(float(form.temperature), float(form.top_p), int(form.max_new), shared_seed),
            conversation=conversation,
            chat_id=chat_id,
        )
        return turn, {"left": replace(left, seed=shared_seed), "right": replace(right, seed=shared_seed)}

    def regenerate(
        self, which: str, turn: Turn, left: Side, right: Side, request: gr.Request | None = None
    ) -> Iterator[dict[str, Any]]:
        """Answer again on one side with a fresh seed, streaming; the other side stays as it is."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if not turn or not turn.user:
            raise gr.Error(t("chat.nothing_to_regenerate"))
        if turn.voted:
            raise gr.Error(t("chat.voted_send_new"))
        self.limiter.check(user.name)
        sides = {"left": left, "right": right}
        sides[which] = Side(history=sides[which].history, seed=random.randrange(2**31))
        yield {
            which: sides[which],
            f"{which}_bot": side_display(turn, sides[which]),
            f"{which}_reward": "",
            **vote_updates(False),
        }
        yield from self._answer(turn, sides, (which,))

    def _answer(self, turn: Turn, sides: dict[str, Side], which: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """Stream the answers of the sides ``which`` together, then score them; the last update opens the votes."""
        # Lazy: importing ctllm.models.generate (torch) takes seconds; start-up (the app, the CLI) does not need it.
        from ctllm.models.generate import ChatJob, GenerationParams, stream_chats
        from ctllm.models.loading import get_model

        jobs: dict[str, ChatJob] = {}
        for side_name in which:
            spec = turn.spec(turn.role(side_name))
            try:
                loaded = get_model(spec, self.ctx.settings, merged=True)
                params = GenerationParams(**{**asdict(turn.sampling), "seed": sides[side_name].seed})
            except UserError as error:
                sides[side_name] = replace(sides[side_name], error=str(error), done=True)
                continue
            key = (turn.chat_id, side_name) if turn.chat_id else None
            jobs[side_name] = ChatJob(loaded, sides[side_name].messages(turn.user), params, cache_key=key)
        shown = 0.0
        try:
            for texts in stream_chats(list(jobs.values())):
                for side_name, answer in zip(jobs, texts, strict=True):
                    sides[side_name] = replace(sides[side_name], answer=answer)
                now = time.monotonic()
                if now - shown >= STREAM_UPDATE_S:  # the first token is shown at once; later ones batched
                    shown = now
                    yield self._panes(turn, sides, jobs)
        except UserError as error:
            for side_name in jobs:
                sides[side_name] = replace(sides[side_name], error=str(error))
        for side_name in jobs:
            sides[side_name] = replace(sides[side_name], done=True)
        scoring = {f"{s}_reward": t("chat.scoring") for s in jobs if not sides[s].error}
        yield {**self._panes(turn, sides, jobs), **scoring}
        for side_name in jobs:
            if not sides[side_name].error:
                sides[side_name] = replace(sides[side_name], reward=self._implicit_reward(turn, sides[side_name]))
        yield {
            **self._panes(turn, sides, which),
            **{f"{s}_reward": reward_line(turn, sides[s]) for s in which},
            **vote_updates(votes_ready(turn, sides["left"], sides["right"])),
        }

    @staticmethod
    def _panes(turn: Turn, sides: dict[str, Side], which: Any) -> dict[str, Any]:
        return {**{s: sides[s] for s in which}, **{f"{s}_bot": side_display(turn, sides[s]) for s in which}}

    def _implicit_reward(self, turn: Turn, side: Side) -> float:
        # Lazy: importing ctllm.models.loading (torch) takes seconds; start-up (the app, the CLI) does not need it.
        from ctllm.models.loading import get_model
        from ctllm.models.scoring import implicit_reward

        if turn.sft_spec == turn.dpo_spec:
            return 0.0
        try:
            policy = get_model(turn.dpo_spec, self.ctx.settings, merged=True)
            reference = get_model(turn.sft_spec, self.ctx.settings, merged=True)
        except UserError:
            return 0.0
        return implicit_reward(policy, reference, side.messages(turn.user), side.answer, turn.beta)

    # --- votes -----------------------------------------------------------------------------------------
    def vote(self, choice: str, turn: Turn, left: Side, right: Side, request: gr.Request | None = None) -> dict:
        """Save the turn as a preference pair in the chat votes collection and update the tally."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if choice not in VOTES:
            raise gr.Error(t("chat.unknown_vote").format(choice=repr(choice)))
        if not turn or not turn.user:
            raise gr.Error(t("chat.send_first"))
        if turn.voted:
            raise gr.Error(t("chat.already_voted"))
        if not (left.done and right.done) or not left.answer or not right.answer:
            raise gr.Error(t("chat.wait_answers"))
        verdict = VOTES[choice]
        turn = replace(turn, voted=verdict)
        saved = save_vote(self.ctx, turn, left, right, verdict, user.name)
        tally = stored_tally(self.ctx, turn.sft_spec, turn.dpo_spec)
        names = model_names(turn)
        note = t("chat.vote_saved") if saved else t("chat.vote_identical")
        return {
            "turn": turn,
            "left_name": names[0],
            "right_name": names[1],
            "left_reward": reward_line(turn, left),
            "right_reward": reward_line(turn, right),
            "tally": tally_text(tally) + f"  \n{note}",
            **vote_updates(False),
        }

    def clear(self, turn: Turn | None = None, request: gr.Request | None = None) -> dict[str, Any]:
        require(request, Role.VIEWER, self.ctx.settings)
        CHAT_CACHES.forget(turn.chat_id if turn else "")
        return {
            "turn": Turn(),
            **{which: Side() for which in SIDES},
            **{f"{which}_bot": [] for which in SIDES},
            **{f"{which}_reward": "" for which in SIDES},
            **vote_updates(False),
        }

    # --- models ----------------------------------------------------------------------------------------
    def refresh_models(self, sft: str, dpo: str, request: gr.Request | None = None) -> dict[str, Any]:
        """The pickers from the runs on disk now: a run finished elsewhere appears, and replaces a DPO side that
        is still the SFT model (or empty). The note follows the selection."""
        require(request, Role.VIEWER, self.ctx.settings)
        choices = model_choices(self.ctx)
        sft = sft or self.ctx.settings.sft_model
        dpo = chosen_dpo(self.ctx, sft, dpo)
        return {
            "sft_model": gr.update(choices=choices, value=sft),
            "dpo_model": gr.update(choices=choices, value=dpo),
            "beta": run_beta(self.ctx, dpo),
            "note": note_text(self.ctx, sft, dpo),
            "runs_seen": runs_signature(self.ctx),
        }

    def poll_models(self, sft: str, dpo: str, seen: str, request: gr.Request | None = None) -> dict[str, Any]:
        """The timer's look for finished runs: nothing to send unless the runs changed since ``seen``."""
        if runs_signature(self.ctx) == seen:
            return {}
        return self.refresh_models(sft, dpo, request)

    def load(self, request: gr.Request | None = None) -> dict[str, Any]:
        """Fill the model pickers on page load (runs may have finished since the app started)."""
        return self.refresh_models(self.ctx.settings.sft_model, default_dpo_spec(self.ctx), request)

    def models_changed(self, sft: str, dpo: str, request: gr.Request | None = None) -> dict[str, Any]:
        """β of the DPO side's run, the saved tally for this pair of models, and the note for this selection."""
        require(request, Role.VIEWER, self.ctx.settings)
        return {
            "beta": run_beta(self.ctx, dpo or ""),
            "tally": tally_text(stored_tally(self.ctx, sft or "", dpo or "")),
            "note": note_text(self.ctx, sft or "", dpo or ""),
        }


def save_vote(ctx: AppContext, turn: Turn, left: Side, right: Side, verdict: str, annotator: str) -> bool:
    """Store the turn as a pair (chosen = the preferred answer; for a tie or both bad, the left one) with
    the models, sampling parameters and seeds in its meta, plus the voter's label. False if nothing to save.

    The prompt is the chosen side's own conversation; when the rejected side's differs (a later turn), it is
    kept in the meta as ``rejected_prompt``, so the pair never claims one model answered the other's history."""
    sides = {"left": left, "right": right}
    first, second = ("right", "left") if verdict == "right better" else ("left", "right")
    chosen, rejected = sides[first].answer, sides[second].answer
    if chosen.strip() == rejected.strip():
        return False
    prompt = sides[first].messages(turn.user)
    rejected_prompt = sides[second].messages(turn.user)
    meta = {
        "origin": "chat vote",
        "verdict": verdict,
        "winner": turn.role(first) if verdict in ("left better", "right better") else verdict,
        "models": {"sft": turn.sft_spec, "dpo": turn.dpo_spec},
        "sides": turn.assign,
        "chosen_model": turn.spec(turn.role(first)),
        "rejected_model": turn.spec(turn.role(second)),
        "params": asdict(turn.sampling),
        "seeds": {"chosen": sides[first].seed, "rejected": sides[second].seed},
        "rewards": {"chosen": sides[first].reward, "rejected": sides[second].reward},
        "beta": turn.beta,
        "blind": turn.blind,
        "annotator": annotator,
    }
    if rejected_prompt != prompt:
        meta["rejected_prompt"] = [dict(m) for m in rejected_prompt]
    pair = Pair(prompt=tuple(prompt), chosen=chosen, rejected=rejected, source="chat", meta=meta)

    store = ctx.store
    target = store.ensure_collection(CHAT_VOTES_COLLECTION, "votes")
    try:
        pair_id = store.add_pair(target, pair, by=annotator).id
    except DuplicatePair as duplicate:  # the same two answers again (greedy decoding): label the stored pair
        pair_id = duplicate.existing_id
    # The left answer was shown first: it is the stored chosen one unless the right one won.
    shown = "rejected" if verdict == "right better" else "chosen"
    store.add_label(pair_id, annotator, STORE_VERDICTS[verdict], shown)
    return True


def stored_tally(ctx: AppContext, sft: str, dpo: str) -> dict[str, int]:
    """Votes saved earlier for this pair of models (from the chat votes collection)."""
    tally = {"dpo": 0, "sft": 0, "tie": 0, "both bad": 0}
    if not sft or not dpo or ctx.store.find_collection(CHAT_VOTES_COLLECTION) is None:
        return tally
    for stored in ctx.store.iter_pairs(CHAT_VOTES_COLLECTION):
        meta = stored.pair.meta
        if meta.get("models") == {"sft": sft, "dpo": dpo} and meta.get("winner") in tally:
            tally[meta["winner"]] += 1
    return tally


def from_form(send: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """``send(text, turn, left, right, TurnSettings, request)`` as an event handler taking FORM_INPUTS one by one,
    named as API clients call them, so the settings are listed once: as :class:`TurnSettings`' fields."""

    def send_form(*args: Any) -> Iterator[Any]:
        *values, request = args
        given = dict(zip(FORM_INPUTS, values, strict=True))
        settings = TurnSettings(**{name: given[name] for name in SETTING_INPUTS})
        yield from send(*(given[name] for name in MESSAGE_INPUTS), settings, request)

    send_form.__name__ = getattr(send, "__name__", "send")
    return named_inputs(send_form, [API_NAMES.get(name, name) for name in FORM_INPUTS])


def by_component(handler: Callable[..., Any], components: Mapping[str, Any]) -> Callable[..., Any]:
    """``handler`` (returning or yielding ``{name: value}``) as a Gradio handler returning ``{component: value}``."""
    return keyed(bind(handler), components)


def build(ctx: AppContext) -> dict[str, Any]:
    """The tab's components and events (inside an open ``gr.Tab``); returns what the page load and the tab's
    selection must run."""
    h = ChatHandlers(ctx)
    c: dict[str, Any] = {"turn": gr.State(Turn()), "left": gr.State(Side()), "right": gr.State(Side())}
    c["runs_seen"] = gr.State("")

    with gr.Row():
        c["sft_model"] = gr.Dropdown(allow_custom_value=True, elem_id="chat-left-model", scale=3)
        c["dpo_model"] = gr.Dropdown(allow_custom_value=True, elem_id="chat-right-model", scale=3)
        c["beta"] = gr.Number(value=DEFAULT_BETA, minimum=0, elem_id="chat-beta", scale=1)
        c["blind"] = gr.Checkbox(value=False, elem_id="chat-blind", scale=2)
    c["note"] = gr.Markdown(elem_id="chat-note")
    gr.Markdown(elem_id="chat-english-only", elem_classes=["kbd-hint"])

    regen = {}
    with gr.Row(equal_height=True):
        for which in SIDES:
            with gr.Column():
                c[f"{which}_name"] = gr.Markdown(elem_id=f"chat-{which}-name")
                c[f"{which}_bot"] = gr.Chatbot(
                    elem_id=f"chat-{which}",
                    height=380,
                    sanitize_html=True,
                    render_markdown=True,
                    show_label=False,
                    feedback_options=None,
                    allow_tags=False,
                    buttons=["copy"],
                    group_consecutive_messages=False,
                )
                c[f"{which}_reward"] = gr.Markdown(elem_id=f"chat-reward-{which}", elem_classes=["reward-line"])
                regen[which] = gr.Button(size="sm", elem_id=f"chat-regen-{which}")

    with gr.Row(elem_classes=["vote-row"]):
        for key in VOTES:
            c[f"vote_{key}"] = gr.Button(interactive=False, elem_id=f"chat-vote-{key}")
    c["tally"] = gr.Markdown(tally_text(stored_tally(ctx, "", "")), elem_id="chat-tally")
    with gr.Row():
        c["text"] = gr.Textbox(lines=2, scale=6, elem_id="chat-input", autofocus=False)
        with gr.Column(scale=1, min_width=120):
            send = gr.Button(variant="primary", elem_id="chat-send")
            clear = gr.Button(elem_id="chat-clear")
    with gr.Accordion(open=False, elem_id="chat-sampling-box"):
        with gr.Row():
            c["temperature"] = gr.Slider(0, 2, value=0.7, step=0.05, elem_id="chat-temperature")
            c["top_p"] = gr.Slider(0.05, 1, value=0.9, step=0.05, elem_id="chat-top-p")
            c["max_new"] = gr.Slider(
                1,
                ctx.settings.max_new_tokens_limit,
                value=min(256, ctx.settings.max_new_tokens_limit),
                step=1,
                elem_id="chat-max-new-tokens",
            )
            c["seed"] = gr.Number(value=-1, precision=0, elem_id="chat-seed")
    timer = gr.Timer(POLL_SECONDS)

    def pick(*names: str) -> list[Any]:
        return [c[name] for name in names]

    panes = (*SIDES, "left_bot", "right_bot", "left_reward", "right_reward", *VOTE_KEYS)
    # One event per turn (no .then chain): the first update echoes the message, the rest stream both answers.
    gr.on(
        [send.click, c["text"].submit],
        by_component(from_form(h.send), c),
        inputs=[c[name] for name in FORM_INPUTS],
        outputs=pick("turn", "text", "left_name", "right_name", *panes),
        concurrency_id="chat-generate",
        show_progress="hidden",
        api_name="chat_send",
    )
    for which in SIDES:
        regen[which].click(
            by_component(bind(h.regenerate, which), c),
            inputs=pick("turn", "left", "right"),
            outputs=pick(*panes),
            concurrency_id="chat-generate",
            show_progress="hidden",
        )
    for key in VOTES:
        c[f"vote_{key}"].click(
            by_component(bind(h.vote, key), c),
            inputs=pick("turn", "left", "right"),
            outputs=pick("turn", "left_name", "right_name", "left_reward", "right_reward", "tally", *VOTE_KEYS),
            concurrency_limit=None,
            api_name=f"chat_vote_{key}",
        )
    # The chatbots' own trash buttons clear the whole turn too, so display and state never disagree.
    gr.on(
        [clear.click, c["left_bot"].clear, c["right_bot"].clear],
        by_component(h.clear, c),
        inputs=pick("turn"),
        outputs=pick("turn", *panes),
    )
    gr.on(
        [c["sft_model"].change, c["dpo_model"].change],
        by_component(h.models_changed, c),
        inputs=pick("sft_model", "dpo_model"),
        outputs=pick("beta", "tally", "note"),
        show_progress="hidden",
    )
    pickers = pick("sft_model", "dpo_model", "beta", "note", "runs_seen")
    timer.tick(
        by_component(h.poll_models, c),
        inputs=pick("sft_model", "dpo_model", "runs_seen"),
        outputs=pickers,
        show_progress="hidden",
        concurrency_limit=None,
    )
    return {
        "load": (by_component(h.load, c), [], pickers),
        "select": (by_component(h.refresh_models, c), pick("sft_model", "dpo_model"), pickers),
        "language": (by_component(h.refresh_models, c), pick("sft_model", "dpo_model"), pickers),
    }
