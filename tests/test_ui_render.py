"""Pure pieces of the UI: inert Markdown, roles, i18n, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gradio as gr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctllm.evaluate.chart_style import display_width, wrap_title
from ctllm.evaluate.report import CHART_TEXT
from ctllm.settings import Settings
from ctllm.ui import plots
from ctllm.ui.auth import LOCAL_USER, Role, identify, require
from ctllm.ui.i18n import STRINGS, Translator, speaking, t
from ctllm.ui.render import code_block, inert_inline, inert_markdown, search_highlighter


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "<a href='javascript:alert(1)'>x</a>",
        "<!-- comment --><iframe src=//evil>",
        "<div\nonclick=alert(1)>multi-line tag</div>",
        "<https://example.com> autolink",
    ],
)
def test_html_outside_code_becomes_text(hostile: str) -> None:
    out = inert_markdown(hostile)
    assert "<" not in out and ">" not in out


def test_links_and_images_cannot_form() -> None:
    for text in ("[x](javascript:alert(1))", "![x](http://e/x.png)", "[x][r]\n\n[r]: javascript:alert(1)"):
        assert "\\[" in inert_markdown(text) and "[" not in inert_markdown(text).replace("\\[", "")


def test_code_is_kept_verbatim() -> None:
    text = "Use `a<b && c>d` here.\n\n```python\nif a < b and arr[0] > 1:\n    print('<tag>')\n```\nafter <b>"
    out = inert_markdown(text)
    assert "`a<b && c>d`" in out
    assert "if a < b and arr[0] > 1:\n    print('<tag>')" in out
    assert out.endswith("after &lt;b&gt;")


def test_an_unclosed_fence_is_closed() -> None:
    out = inert_markdown("```\n<script>")
    assert out.endswith("\n```")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>&[]()! \nabc*_=-:/\"'\x00")), max_size=80))
def test_without_code_no_angle_bracket_or_link_survives(text: str) -> None:
    out = inert_markdown(text)
    assert "<" not in out and ">" not in out and "\x00" not in out
    assert "[" not in out.replace("\\[", "")


def test_code_block_fence_outlasts_backticks_inside() -> None:
    block = code_block("a ```` b\n<script>")
    assert block.startswith("`````text\n") and block.endswith("\n`````")


def test_inline_names_cannot_inject_markup() -> None:
    assert inert_inline("run_1 *x* `y` <b>") == "run\\_1 \\*x\\* \\`y\\` &lt;b&gt;"


def test_search_matches_are_marked_after_escaping() -> None:
    mark = search_highlighter("Boil eggs")
    out = inert_markdown("<b>boil</b> the EGGS, parboil `boil` [boil](javascript:x)", mark)
    assert out == (
        "&lt;b&gt;<mark>boil</mark>&lt;/b&gt; the <mark>EGGS</mark>, parboil `boil` \\[<mark>boil</mark>](javascript:x)"
    )  # whole words from their start, code left alone, the link bracket still escaped
    assert inert_markdown("a < b, lt", search_highlighter("lt")) == "a &lt; b, <mark>lt</mark>"  # entities intact
    assert inert_markdown("用菜刀切菜", search_highlighter("菜刀")) == "用<mark>菜刀</mark>切菜"
    assert search_highlighter("   ") is None and inert_markdown("<x>", None) == "&lt;x&gt;"


@given(st.text(max_size=60), st.text(min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_highlighting_never_lets_markup_through(text: str, query: str) -> None:
    mark = search_highlighter(query)
    out = inert_markdown(text.replace("`", "").replace("~", ""), mark).replace("<mark>", "").replace("</mark>", "")
    assert "<" not in out and ">" not in out


def test_local_user_has_every_right_only_on_loopback_without_auth(tmp_path: Path) -> None:
    local = Settings(data_dir=tmp_path)
    assert identify(None, local).name == LOCAL_USER and identify(None, local).role == Role.ADMIN
    exposed = Settings(data_dir=tmp_path, host="0.0.0.0")
    assert identify(gr.Request(), exposed).role == Role.VIEWER
    with pytest.raises(gr.Error, match="admin role"):
        require(gr.Request(), Role.ADMIN, exposed)


def test_roles_from_settings(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, auth=("a:1", "b:2", "c:3"), admins=("a",), annotators=("b",))
    assert identify(gr.Request(username="a"), s).role == Role.ADMIN
    assert identify(gr.Request(username="b"), s).role == Role.ANNOTATOR
    assert identify(gr.Request(username="c"), s).role == Role.VIEWER
    open_annotation = Settings(data_dir=tmp_path, auth=("c:3",))
    assert identify(gr.Request(username="c"), open_annotation).role == Role.ANNOTATOR


def test_every_string_has_both_languages_and_components_switch_by_elem_id() -> None:
    for key, (en, zh) in STRINGS.items():
        assert en and zh, key
    with gr.Blocks() as demo:
        tab = gr.Markdown(elem_id="app-title")
        box = gr.Textbox(elem_id="pairs-search")
        gr.Markdown(elem_id="no-strings-for-me")
        tr = Translator()
        tr.localize(demo)
    assert tr.components == [tab, box]
    assert (tab.value, box.label) == ("## " + t("app.title", "en"), t("pairs-search.label", "en"))
    assert tr.updates("zh") == [
        {"__type__": "update", "value": "## " + t("app.title", "zh")},
        {"__type__": "update", "label": "搜索（中英文子串）"},
    ]


def test_plots_wait_for_the_first_step_then_draw_train_and_eval_on_the_same_axes() -> None:
    waiting = plots.metric_figures([])
    assert all(plots.point_count(fig) == 0 for fig in waiting)
    assert all(plots.WAITING_TEXT in fig.layout.annotations[0].text for fig in waiting)
    rows = [
        {
            "step": 1,
            "loss": math.log(2),
            "rewards/margins": 0.0,
            "rewards/accuracies": 0.0,
            "rewards/chosen": 0.0,
            "rewards/rejected": 0.0,
        },
        {
            "step": 2,
            "loss": 0.6,
            "rewards/margins": 0.2,
            "rewards/accuracies": 0.75,
            "rewards/chosen": -0.1,
            "rewards/rejected": -0.3,
        },
        {"step": 2, "eval_loss": 0.65, "eval_rewards/margins": 0.1, "eval_rewards/accuracies": 0.6},
        {"step": 3, "loss": "nan"},  # written as a string by the run for non-finite values: skipped
    ]
    loss, margin, accuracy, rewards = plots.metric_figures(rows)
    assert [trace.name for trace in loss.data] == ["train", "eval"]
    assert list(loss.data[0].y) == [math.log(2), 0.6] and list(loss.data[1].x) == [2.0]
    assert plots.point_count(margin) == 3 and plots.point_count(accuracy) == 3
    assert [trace.name for trace in rewards.data] == ["chosen", "rejected"]


def test_overlay_compares_runs() -> None:
    fig = plots.overlay_figure({"a": [{"step": 1, "loss": 0.7}], "b": [{"step": 1, "loss": 0.69}, {"step": 2}]}, "loss")
    assert [trace.name for trace in fig.data] == ["a", "b"]
    assert plots.point_count(plots.overlay_figure({}, "loss")) == 0


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("Preference accuracy on held-out pairs (length-normalised log-likelihood)", 30),
        ("留出偏好对上的偏好准确率（按长度归一化的对数似然）", 20),
        ("损失：DPO（左轴）与 chosen 的 NLL（右轴）；记录的损失为 DPO + α·NLL", 24),
    ],
)
def test_titles_wrap_to_their_width_in_both_scripts(text: str, width: int) -> None:
    lines = wrap_title(text, width).split("<br>")
    assert len(lines) > 1 and all(display_width(line) <= width for line in lines), lines
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost, breaks only
    assert wrap_title("Loss", 44) == "Loss"


def test_plot_words_follow_the_language_and_every_key_is_in_the_table() -> None:
    for panel in (*plots.PANELS, plots.NLL_LOSS_PANEL):
        assert f"plot.{panel.key}" in STRINGS and all(f"plot.series.{name}" in STRINGS for _, name in panel.series)
    # The evaluation charts' English is the HTML export's: one wording.
    assert {key: t(f"eval_chart.{key}", "en") for key in CHART_TEXT} == CHART_TEXT
    rows = [{"step": 1, "loss": 0.69, "eval_loss": 0.7}]
    with speaking("zh"):
        loss = plots.metric_figures(rows)[0]
        waiting = plots.idle_figures()[0]
    assert loss.layout.title.text == "损失" and [trace.name for trace in loss.data] == ["训练", "评估"]
    assert loss.layout.xaxis.title.text == "步数" and loss.data[0].hovertemplate.startswith("步数 ")
    assert waiting.layout.annotations[0].text == t("train.no_curves", "zh")
    assert plots.metric_figures(rows)[0].layout.title.text == "Loss"  # the default session speaks English


def test_a_placeholder_is_the_waiting_figure_without_plotly() -> None:
    sent = json.loads(plots.placeholder("Loss", "Start a run to see its curves here.").plot)
    drawn = json.loads(plots.waiting_figure("Loss", "Start a run to see its curves here.").to_json())
    assert sent["data"] == drawn["data"] == []
    assert sent["layout"] == {key: value for key, value in drawn["layout"].items() if key != "template"}
