"""Chat tab: the SFT (reference) model on the left, the DPO model on the right, one input for both.

Both answers stream at once (two events chained on the same turn start). Under each answer: its implicit
reward β·(log π_dpo − log π_sft). A vote saves a preference pair into the "chat votes" collection.

The conversation is shared: after each turn the voted-better answer (the left one when there was no
clear winner) joins the history both models see next, so every saved pair has one well-defined prompt.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ctllm.errors import UserError
from ctllm.pairs.schema import Message, Pair
from ctllm.ui.auth import Role, User, require
from ctllm.ui.context import CHAT_VOTES_COLLECTION, AppContext
from ctllm.ui.handlers import bind
from ctllm.ui.i18n import Translator, t
from ctllm.ui.render import chat_display, inert_inline

SIDES = ("left", "right")
VOTES = {"left": "left better", "right": "right better", "tie": "tie", "bothbad": "both bad"}
STORE_VERDICTS = {"left better": "first", "right better": "second", "tie": "tie", "both bad": "both_bad"}
DEFAULT_BETA = 0.1


def new_turn() -> dict[str, Any]:
    return {
        "history": [],  # shared messages before this turn's user message
        "user": "",  # this turn's user message ("" before the first send)
        "assign": {"left": "sft", "right": "dpo"},  # which model answers on which side
        "specs": {"sft": "", "dpo": ""},
        "blind": False,
        "beta": DEFAULT_BETA,
        "params": {},
        "voted": "",
    }


def new_side() -> dict[str, Any]:
    return {"answer": "", "seed": None, "done": False, "reward": None, "error": ""}


def turn_messages(turn: dict[str, Any]) -> list[Message]:
    return [*turn["history"], Message(role="user", content=turn["user"])]


def side_display(turn: dict[str, Any], side: dict[str, Any]) -> list[dict[str, str]]:
    messages = list(turn["history"])
    if turn["user"]:
        messages.append(Message(role="user", content=turn["user"]))
        if side["answer"]:
            messages.append(Message(role="assistant", content=side["answer"]))
    return chat_display(messages)


def adopted_answer(turn: dict[str, Any], left: dict[str, Any], right: dict[str, Any]) -> str:
    """The answer that joins the shared history: the voted-better one, else the left one."""
    if turn["voted"] == "right better":
        return right["answer"]
    return left["answer"] or right["answer"]


def model_names(turn: dict[str, Any], lang: str = "en") -> tuple[str, str]:
    """Headers above the two chats: model names, hidden as Model A / B in blind mode until the vote."""
    if turn["blind"] and not turn["voted"]:
        return "**Model A**", "**Model B**"
    names = []
    for side in SIDES:
        role = turn["assign"][side]
        spec = turn["specs"][role] or "?"
        names.append(f"**{role.upper()}** · {inert_inline(spec)}")
    return names[0], names[1]


def reward_line(turn: dict[str, Any], side: dict[str, Any]) -> str:
    if side["error"]:
        return f"⚠ {inert_inline(side['error'])}"
    if side["reward"] is None:
        return ""
    if turn["blind"] and not turn["voted"]:
        return "implicit reward: shown after the vote"
    return f"implicit reward β·(log π_dpo − log π_sft) = **{side['reward']:+.3f}** (β = {turn['beta']:g})"


def tally_text(tally: dict[str, int]) -> str:
    decided = tally["dpo"] + tally["sft"]
    rate = f"{tally['dpo'] / decided:.0%}" if decided else "–"
    return (
        f"DPO win rate against SFT: **{rate}** ({tally['dpo']} DPO, {tally['sft']} SFT, "
        f"{tally['tie']} ties, {tally['both bad']} both bad)"
    )


def run_beta(ctx: AppContext, spec: str) -> float:
    """β of the run behind ``spec`` (run:NAME or latest-run), else the default."""
    from ctllm.models.registry import LATEST_RUN, RUN_PREFIX, run_names
    from ctllm.runs import read_config

    name = ""
    if spec == LATEST_RUN:
        names = run_names(ctx.settings)
        name = names[0] if names else ""
    elif spec.startswith(RUN_PREFIX):
        name = spec[len(RUN_PREFIX) :]
    if not name:
        return DEFAULT_BETA
    beta = read_config(ctx.settings.runs_dir / name).get("beta")
    return float(beta) if isinstance(beta, (int, float)) and beta > 0 else DEFAULT_BETA


def run_numbers(ctx: AppContext, name: str) -> str:
    """A run's before/after numbers from its end-of-run evaluation ("SFT → DPO pref. acc. 45% → 70% · ..."),
    or "" when it has none."""
    from ctllm.evaluate import headline, headline_text, load_result

    result = load_result(ctx.settings.runs_dir / name)
    numbers = headline_text(headline(result)) if result else ""
    return f"SFT → DPO {numbers}" if numbers else ""


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, spec) of every model to offer; a run's label carries its before/after numbers."""
    from ctllm.models.registry import LATEST_RUN, RUN_PREFIX, list_models, run_names

    choices = []
    names = run_names(ctx.settings)
    numbers = {name: run_numbers(ctx, name) for name in names}
    if names:
        latest = f"latest finished run ({names[0]})"
        choices.append((f"{latest} · {numbers[names[0]]}" if numbers[names[0]] else latest, LATEST_RUN))
    for spec in list_models(ctx.settings):
        shown = numbers.get(spec.ref[len(RUN_PREFIX) :], "") if spec.ref.startswith(RUN_PREFIX) else ""
        choices.append((f"{spec.label} · {shown}" if shown else spec.label, spec.ref))
    return choices


def default_dpo_spec(ctx: AppContext) -> str:
    """The latest finished run when there is one, else the configured DPO model, else the SFT model."""
    from ctllm.models.registry import LATEST_RUN, resolve_spec, run_names

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
                raise gr.Error(f"Rate limit: {self.per_minute} generations a minute; try again in {wait:.0f} s.")
            times.append(now)


def served_models(ctx: AppContext) -> set[str]:
    """Specs any annotator may chat with: the configured ones and finished runs (loading anything else, such
    as a hub download, is changing the models served: an admin's action)."""
    from ctllm.models.registry import LATEST_RUN, RUN_PREFIX, run_names

    served = {ctx.settings.sft_model, ctx.settings.dpo_model, default_dpo_spec(ctx)}
    if run_names(ctx.settings):
        served.add(LATEST_RUN)
    served.update(RUN_PREFIX + name for name in run_names(ctx.settings))
    return served


def check_model_allowed(ctx: AppContext, user: User, spec: str) -> None:
    if not user.can(Role.ADMIN) and spec not in served_models(ctx):
        raise gr.Error(
            f"Not allowed: only admins choose other models than those served ({inert_inline(spec)} is not one)."
        )


@dataclass
class ChatHandlers:
    ctx: AppContext
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.ctx.settings.generation_rate_per_minute)

    # --- start of a turn -------------------------------------------------------------------------------
    def begin_turn(
        self,
        text: str,
        turn: dict[str, Any],
        left: dict[str, Any],
        right: dict[str, Any],
        sft_spec: str,
        dpo_spec: str,
        blind: bool,
        beta: float,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: float | None,
        request: gr.Request | None = None,
    ) -> tuple[Any, ...]:
        """Record the new user message; the two streams start after this returns."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.")
        if not sft_spec or not dpo_spec:
            raise gr.Error("Pick a model for each side.")
        for spec in (sft_spec, dpo_spec):
            check_model_allowed(self.ctx, user, spec)
        self.limiter.check(user.name)
        limit = self.ctx.settings.max_new_tokens_limit
        if not 1 <= int(max_new_tokens) <= limit:
            raise gr.Error(f"max new tokens must be between 1 and {limit}.")
        turn = dict(turn or new_turn())
        if turn["user"]:
            answer = adopted_answer(turn, left, right)
            turn["history"] = [*turn["history"], Message(role="user", content=turn["user"])]
            if answer:
                turn["history"].append(Message(role="assistant", content=answer))
            else:  # no answer to keep: drop the unanswered user turn too, so roles keep alternating
                turn["history"] = turn["history"][:-1]
        turn["user"] = text
        turn["specs"] = {"sft": sft_spec, "dpo": dpo_spec}
        turn["blind"] = bool(blind)
        turn["beta"] = float(beta) if beta and beta > 0 else DEFAULT_BETA
        turn["assign"] = (
            dict(random.choice([{"left": "sft", "right": "dpo"}, {"left": "dpo", "right": "sft"}]))
            if blind
            else {"left": "sft", "right": "dpo"}
        )
        shared_seed = int(seed) if seed is not None and seed >= 0 else random.randrange(2**31)
        turn["params"] = {
            "temperature": float(temperature),
            "top_p": float(top_p),
            "max_new_tokens": int(max_new_tokens),
            "seed": shared_seed,
        }
        turn["voted"] = ""
        left, right = new_side(), new_side()
        left["seed"] = right["seed"] = shared_seed
        names = model_names(turn)
        return (
            turn,
            left,
            right,
            "",  # clear the input box
            side_display(turn, left),
            side_display(turn, right),
            names[0],
            names[1],
            "",
            "",
            *vote_updates(False),
        )

    def regenerate(self, which: str, turn: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        """Start over one side's answer with a fresh seed (the stream follows)."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        self.limiter.check(user.name)
        if not turn or not turn["user"]:
            raise gr.Error("Nothing to regenerate yet.")
        if turn["voted"]:
            raise gr.Error("This turn has been voted on; send a new message.")
        side = new_side()
        side["seed"] = random.randrange(2**31)
        return side, side_display(turn, side), "", *vote_updates(False)

    # --- the streams -----------------------------------------------------------------------------------
    def stream(self, which: str, turn: dict[str, Any], side: dict[str, Any], request: gr.Request | None = None):
        """Stream one side's answer, then its implicit reward. Yields (chatbot, side state, reward line)."""
        require(request, Role.ANNOTATOR, self.ctx.settings)
        if not turn or not turn["user"] or side["done"]:
            yield side_display(turn or new_turn(), side or new_side()), side, gr.skip()
            return
        from ctllm.models.generate import GenerationParams, stream_chat
        from ctllm.models.loading import get_model

        side = dict(side)
        role = turn["assign"][which]
        spec = turn["specs"][role]
        messages = turn_messages(turn)
        yield side_display(turn, side), side, f"Loading {inert_inline(spec)} (the first time takes a few seconds)…"
        try:
            loaded = get_model(spec, self.ctx.settings)
            params = GenerationParams(**{**turn["params"], "seed": side["seed"]})
            yield side_display(turn, side), side, "Answering…"
            for text in stream_chat(loaded, messages, params):
                side["answer"] = text
                yield side_display(turn, side), side, gr.skip()
            side["done"] = True
            yield side_display(turn, side), side, "scoring…"
            side["reward"] = self._implicit_reward(turn, messages, side["answer"])
        except UserError as error:
            side["error"] = str(error)
            side["done"] = True
        yield side_display(turn, side), side, reward_line(turn, side)

    def _implicit_reward(self, turn: dict[str, Any], messages: list[Message], answer: str) -> float:
        from ctllm.models.loading import get_model
        from ctllm.models.scoring import implicit_reward

        sft, dpo = turn["specs"]["sft"], turn["specs"]["dpo"]
        if sft == dpo:
            return 0.0
        policy = get_model(dpo, self.ctx.settings)
        reference = get_model(sft, self.ctx.settings)
        return implicit_reward(policy, reference, messages, answer, turn["beta"])

    def after_stream(self, turn: dict[str, Any], left: dict[str, Any], right: dict[str, Any]) -> list[Any]:
        """Enable the votes once both answers are finished (checked again by :meth:`vote`)."""
        ready = bool(turn and turn["user"] and not turn["voted"] and left["done"] and right["done"])
        return vote_updates(ready)

    # --- votes -----------------------------------------------------------------------------------------
    def vote(
        self,
        choice: str,
        turn: dict[str, Any],
        left: dict[str, Any],
        right: dict[str, Any],
        request: gr.Request | None = None,
    ) -> tuple[Any, ...]:
        """Save the turn as a preference pair in the chat votes collection and update the tally."""
        user = require(request, Role.ANNOTATOR, self.ctx.settings)
        if choice not in VOTES:
            raise gr.Error(f"unknown vote {choice!r}")
        if not turn or not turn["user"]:
            raise gr.Error("Send a message first.")
        if turn["voted"]:
            raise gr.Error("This turn already has a vote.")
        if not (left["done"] and right["done"]) or not left["answer"] or not right["answer"]:
            raise gr.Error("Wait until both answers are finished.")
        verdict = VOTES[choice]
        turn = dict(turn)
        turn["voted"] = verdict
        saved = save_vote(self.ctx, turn, left, right, verdict, user.name)
        tally = stored_tally(self.ctx, turn["specs"]["sft"], turn["specs"]["dpo"])
        names = model_names(turn)
        note = "Saved to the “chat votes” collection." if saved else "Both answers are identical: no pair saved."
        return (
            turn,
            names[0],
            names[1],
            reward_line(turn, left),
            reward_line(turn, right),
            tally_text(tally) + f"  \n{note}",
            *vote_updates(False),
        )

    def clear(self, turn: dict[str, Any], request: gr.Request | None = None) -> tuple[Any, ...]:
        require(request, Role.VIEWER, self.ctx.settings)
        return new_turn(), new_side(), new_side(), [], [], "", "", *vote_updates(False)

    # --- models ----------------------------------------------------------------------------------------
    def refresh_models(self, sft: str, dpo: str, request: gr.Request | None = None) -> tuple[Any, Any]:
        """The model lists again (a run may have finished since the page loaded); the choices made stay."""
        require(request, Role.VIEWER, self.ctx.settings)
        choices = model_choices(self.ctx)
        return gr.update(choices=choices, value=sft), gr.update(choices=choices, value=dpo)

    def load(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Fill the model pickers (on page load: runs may have finished since the app started)."""
        require(request, Role.VIEWER, self.ctx.settings)
        choices = model_choices(self.ctx)
        dpo = default_dpo_spec(self.ctx)
        note = ""
        if dpo == self.ctx.settings.sft_model:
            note = "No finished training run yet: both sides use the SFT model until one finishes (Train tab)."
        return (
            gr.update(choices=choices, value=self.ctx.settings.sft_model),
            gr.update(choices=choices, value=dpo),
            run_beta(self.ctx, dpo),
            note,
        )

    def models_changed(self, sft: str, dpo: str, request: gr.Request | None = None) -> tuple[float, str]:
        """β of the DPO side's run, and the saved tally for this pair of models."""
        require(request, Role.VIEWER, self.ctx.settings)
        return run_beta(self.ctx, dpo or ""), tally_text(stored_tally(self.ctx, sft or "", dpo or ""))


def vote_updates(enabled: bool) -> list[Any]:
    return [gr.update(interactive=enabled) for _ in VOTES]


def save_vote(
    ctx: AppContext, turn: dict[str, Any], left: dict[str, Any], right: dict[str, Any], verdict: str, annotator: str
) -> bool:
    """Store the turn as a pair (chosen = the preferred answer; for a tie or both bad, the left one) with
    the models, sampling parameters and seeds in its meta, plus the voter's label. False if nothing to save."""
    sides = {"left": left, "right": right}
    first, second = ("right", "left") if verdict == "right better" else ("left", "right")
    chosen, rejected = sides[first]["answer"], sides[second]["answer"]
    if chosen.strip() == rejected.strip():
        return False
    assign = turn["assign"]
    meta = {
        "origin": "chat vote",
        "verdict": verdict,
        "winner": assign[first] if verdict in ("left better", "right better") else verdict,
        "models": {"sft": turn["specs"]["sft"], "dpo": turn["specs"]["dpo"]},
        "sides": dict(assign),
        "chosen_model": turn["specs"][assign[first]],
        "rejected_model": turn["specs"][assign[second]],
        "params": dict(turn["params"]),
        "seeds": {"chosen": sides[first]["seed"], "rejected": sides[second]["seed"]},
        "rewards": {"chosen": sides[first]["reward"], "rejected": sides[second]["reward"]},
        "beta": turn["beta"],
        "blind": turn["blind"],
        "annotator": annotator,
    }
    pair = Pair(prompt=tuple(turn_messages(turn)), chosen=chosen, rejected=rejected, source="chat", meta=meta)
    from ctllm.pairs.store import DuplicatePair

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


def build(ctx: AppContext, tr: Translator) -> dict[str, Any]:
    """The tab's components and events (inside an open ``gr.Tab``); returns what the page load must run."""
    h = ChatHandlers(ctx)
    turn = gr.State(new_turn())
    left_state, right_state = gr.State(new_side()), gr.State(new_side())

    with gr.Row():
        sft_model = tr.bind(
            gr.Dropdown(label=t("chat.left_model"), allow_custom_value=True, elem_id="chat-left-model", scale=3),
            "chat.left_model",
        )
        dpo_model = tr.bind(
            gr.Dropdown(label=t("chat.right_model"), allow_custom_value=True, elem_id="chat-right-model", scale=3),
            "chat.right_model",
        )
        beta = tr.bind(
            gr.Number(value=DEFAULT_BETA, label=t("chat.beta"), minimum=0, elem_id="chat-beta", scale=1), "chat.beta"
        )
        blind = tr.bind(gr.Checkbox(label=t("chat.blind"), value=False, elem_id="chat-blind", scale=2), "chat.blind")
    note = gr.Markdown(elem_id="chat-note")
    tr.bind(gr.Markdown(t("chat.english_only"), elem_classes=["kbd-hint"]), "chat.english_only", "value")

    with gr.Row(equal_height=True):
        columns = {}
        for which in SIDES:
            with gr.Column():
                name = gr.Markdown(elem_id=f"chat-{which}-name")
                bot = gr.Chatbot(
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
                reward = gr.Markdown(elem_id=f"chat-reward-{which}", elem_classes=["reward-line"])
                regen = tr.bind(
                    gr.Button(t("chat.regen"), size="sm", elem_id=f"chat-regen-{which}"), "chat.regen", "value"
                )
            columns[which] = (name, bot, reward, regen)

    with gr.Row(elem_classes=["vote-row"]):
        vote_buttons = {
            key: tr.bind(
                gr.Button(t(f"chat.vote_{key}"), interactive=False, elem_id=f"chat-vote-{key}"),
                f"chat.vote_{key}",
                "value",
            )
            for key in VOTES
        }
    tally = gr.Markdown(tally_text(stored_tally(ctx, "", "")), elem_id="chat-tally")
    with gr.Row():
        text = tr.bind(
            gr.Textbox(label=t("chat.input"), lines=2, scale=6, elem_id="chat-input", autofocus=False), "chat.input"
        )
        with gr.Column(scale=1, min_width=120):
            send = tr.bind(gr.Button(t("chat.send"), variant="primary", elem_id="chat-send"), "chat.send", "value")
            clear = tr.bind(gr.Button(t("chat.clear"), elem_id="chat-clear"), "chat.clear", "value")
    with gr.Accordion(t("chat.sampling"), open=False) as sampling:
        tr.bind(sampling, "chat.sampling")
        with gr.Row():
            temperature = tr.bind(
                gr.Slider(0, 2, value=0.7, step=0.05, label=t("chat.temperature"), elem_id="chat-temperature"),
                "chat.temperature",
            )
            top_p = tr.bind(
                gr.Slider(0.05, 1, value=0.9, step=0.05, label=t("chat.top_p"), elem_id="chat-top-p"), "chat.top_p"
            )
            max_new = tr.bind(
                gr.Slider(
                    1,
                    ctx.settings.max_new_tokens_limit,
                    value=min(256, ctx.settings.max_new_tokens_limit),
                    step=1,
                    label=t("chat.max_new_tokens"),
                    elem_id="chat-max-new-tokens",
                ),
                "chat.max_new_tokens",
            )
            seed = tr.bind(
                gr.Number(value=-1, precision=0, label=t("chat.seed") + " (−1: random)", elem_id="chat-seed"),
                "chat.seed",
            )

    names = [columns["left"][0], columns["right"][0]]
    bots = [columns["left"][1], columns["right"][1]]
    rewards = [columns["left"][2], columns["right"][2]]
    votes = list(vote_buttons.values())
    side_states = {"left": left_state, "right": right_state}

    begin = gr.on(
        [send.click, text.submit],
        h.begin_turn,
        inputs=[
            text,
            turn,
            left_state,
            right_state,
            sft_model,
            dpo_model,
            blind,
            beta,
            temperature,
            top_p,
            max_new,
            seed,
        ],
        outputs=[turn, left_state, right_state, text, *bots, *names, *rewards, *votes],
        concurrency_limit=None,
        api_name="chat_send",
    )

    def chain_stream(event: Any, which: str) -> None:
        state = side_states[which]
        bot, reward = columns[which][1], columns[which][2]
        streamed = event.then(
            bind(h.stream, which),
            inputs=[turn, state],
            outputs=[bot, state, reward],
            concurrency_id=f"chat-{which}",
            show_progress="minimal",
        )
        streamed.then(h.after_stream, inputs=[turn, left_state, right_state], outputs=votes, concurrency_limit=None)

    for which in SIDES:
        chain_stream(begin, which)
        regen_event = columns[which][3].click(
            bind(h.regenerate, which),
            inputs=[turn],
            outputs=[side_states[which], columns[which][1], columns[which][2], *votes],
            concurrency_limit=None,
        )
        chain_stream(regen_event, which)

    for key, button in vote_buttons.items():
        button.click(
            bind(h.vote, key),
            inputs=[turn, left_state, right_state],
            outputs=[turn, *names, *rewards, tally, *votes],
            concurrency_limit=None,
            api_name=f"chat_vote_{key}",
        )
    # The chatbots' own trash buttons clear the whole turn too, so display and state never disagree.
    gr.on(
        [clear.click, *(bot.clear for bot in bots)],
        h.clear,
        inputs=[turn],
        outputs=[turn, left_state, right_state, *bots, *rewards, *votes],
    )
    gr.on([sft_model.change, dpo_model.change], h.models_changed, inputs=[sft_model, dpo_model], outputs=[beta, tally])
    return {
        "load": (h.load, [], [sft_model, dpo_model, beta, note]),
        "select": (h.refresh_models, [sft_model, dpo_model], [sft_model, dpo_model]),
    }
