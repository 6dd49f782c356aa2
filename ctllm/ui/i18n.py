"""Interface strings in English and Chinese, switchable at run time.

Components are created with their English label and bound to a key; switching the language returns one
``gr.update`` per bound component. Strings used inside handlers' messages go through :func:`t`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

LANGUAGES = ("en", "zh")
LANGUAGE_CHOICES = [("English", "en"), ("中文", "zh")]

STRINGS: dict[str, tuple[str, str]] = {
    # App frame.
    "app.title": ("CT-LLM DPO Studio", "CT-LLM DPO 工作台"),
    "app.subtitle": (
        "Collect and label preference pairs, train with DPO, and compare the models side by side.",
        "收集并标注偏好对，用 DPO 训练，再并排比较模型。",
    ),
    "app.language": ("Interface language", "界面语言"),
    "app.user": ("Signed in as", "当前用户"),
    "tab.pairs": ("Pairs", "偏好对"),
    "tab.train": ("Train", "训练"),
    "tab.chat": ("Chat", "对话"),
    "tab.help": ("Help", "帮助"),
    # Pairs tab.
    "pairs.collection": ("Collection", "数据集"),
    "pairs.search": ("Search (Chinese or English substring)", "搜索（中英文子串）"),
    "pairs.language": ("Language", "语言"),
    "pairs.source": ("Source", "来源"),
    "pairs.label_state": ("Label state", "标注状态"),
    "pairs.sort": ("Sort", "排序"),
    "pairs.score_run": ("Run for score sort", "按得分排序所用的运行"),
    "pairs.page": ("Page", "页码"),
    "pairs.go": ("Go", "跳转"),
    "pairs.prev_page": ("◀ Page", "◀ 上一页"),
    "pairs.next_page": ("Page ▶", "下一页 ▶"),
    "pairs.table": ("Pairs on this page (click a row to open it)", "本页偏好对（点击一行打开）"),
    "pairs.context": ("System prompt and earlier turns", "系统提示与之前的对话"),
    "pairs.prompt": ("Prompt", "提示"),
    "pairs.first": ("Response 1", "回答 1"),
    "pairs.second": ("Response 2", "回答 2"),
    "pairs.vote_first": ("1 · First better", "1 · 回答 1 更好"),
    "pairs.vote_second": ("2 · Second better", "2 · 回答 2 更好"),
    "pairs.vote_tie": ("3 · Tie", "3 · 一样好"),
    "pairs.vote_bothbad": ("4 · Both bad", "4 · 都不好"),
    "pairs.vote_skip": ("s · Skip", "s · 跳过"),
    "pairs.prev": ("← Previous", "← 上一个"),
    "pairs.next": ("Next →", "下一个 →"),
    "pairs.undo": ("u · Undo", "u · 撤销"),
    "pairs.reason": ("Reason (optional)", "理由（可选）"),
    "pairs.keys": (
        "Keys: 1 2 3 4 vote · s skip · ← → move · u undo (not while typing in a box).",
        "快捷键：1 2 3 4 投票 · s 跳过 · ← → 移动 · u 撤销（在输入框中输入时无效）。",
    ),
    "pairs.edit": (
        "Edit a response (saved as a new version; the original is kept)",
        "编辑回答（另存为新版本，保留原版）",
    ),
    "pairs.edit_which": ("Which response", "哪个回答"),
    "pairs.edit_text": ("New text", "新文本"),
    "pairs.edit_load": ("Load current text", "载入当前文本"),
    "pairs.edit_save": ("Save as new version", "保存为新版本"),
    "pairs.add": ("Add a pair by hand", "手动添加偏好对"),
    "pairs.add_system": ("System prompt (optional)", "系统提示（可选）"),
    "pairs.add_prompt": ("Prompt", "提示"),
    "pairs.add_chosen": ("Better response (chosen)", "更好的回答（chosen）"),
    "pairs.add_rejected": ("Worse response (rejected)", "较差的回答（rejected）"),
    "pairs.add_collection": ("Into collection", "加入数据集"),
    "pairs.add_save": ("Add pair", "添加"),
    "pairs.stats": ("Progress, agreement and statistics", "进度、一致性与统计"),
    "pairs.stats_refresh": ("Compute statistics", "计算统计"),
    "pairs.import": ("Import", "导入"),
    "pairs.import_file": (
        "Upload a file (JSON, JSONL, Parquet, CSV, TSV)",
        "上传文件（JSON、JSONL、Parquet、CSV、TSV）",
    ),
    "pairs.import_path": ("…or a path on the server / a hub dataset id", "……或服务器上的路径 / Hub 数据集 id"),
    "pairs.import_format": ("Format (auto: detect)", "格式（auto：自动检测）"),
    "pairs.import_mapping": (
        'Column mapping when detection fails (JSON, e.g. {"prompt": "question", "chosen": "good", "rejected": "bad"})',
        '检测失败时的列映射（JSON，例如 {"prompt": "question", "chosen": "good", "rejected": "bad"}）',
    ),
    "pairs.import_collection": ("Collection name", "数据集名称"),
    "pairs.import_abort": (
        "Abort on the first bad row (default: skip and report)",
        "遇到错误行即中止（默认：跳过并报告）",
    ),
    "pairs.import_run": ("Import", "导入"),
    "pairs.export": ("Export", "导出"),
    "pairs.export_format": ("Export format", "导出格式"),
    "pairs.export_run": ("Export collection", "导出数据集"),
    "pairs.export_file": ("Download", "下载"),
    "pairs.search_run": ("Search", "搜索"),
    "pairs.table_legend": (
        "Δ len: characters of the chosen response minus the rejected one (as stored; below 0: chosen is shorter) · "
        "mine: your verdict · n: labels on the pair, by everyone",
        "Δ len：chosen 回答字符数减去 rejected 回答字符数（按存储；小于 0 表示 chosen 更短）· "
        "mine：你的判断 · n：该偏好对的标注数（所有人）",
    ),
    "pairs.page_of": ("Page {page} of {pages}", "第 {page} 页，共 {pages} 页"),
    "pairs.matches": ("{n} pairs match", "{n} 个偏好对符合条件"),
    "pairs.matches_text": ("{n} pairs match “{text}”", "{n} 个偏好对匹配“{text}”"),
    "pairs.no_match": ("No pairs match.", "没有符合条件的偏好对。"),
    "pairs.no_match_not_mine": (
        "(The label state “not labelled by me” hides the pairs you labelled or skipped.)",
        "（标注状态“我未标注”会隐藏你已标注或跳过的偏好对。）",
    ),
    "pairs.only_pages": (
        "There are only {pages} page(s): showing page {page}.",
        "只有 {pages} 页：显示第 {page} 页。",
    ),
    "pairs.progress": (
        "**Mine: {mine} / {total}** ({share}) judged · {skipped} skipped · everyone: {anyone} pairs judged, "
        "{labels} judgements by {annotators} annotator(s)",
        "**我的：{mine} / {total}**（{share}）已判断 · 跳过 {skipped} · 所有人：{anyone} 个偏好对已判断，"
        "{annotators} 位标注者共 {labels} 次判断",
    ),
    "pairs.stats_counts": (
        "pairs: {pairs} · judged: {judged} · only skipped: {skipped} · disagreements: {disagreements} · "
        "edited: {edited}",
        "偏好对：{pairs} · 已判断：{judged} · 仅被跳过：{skipped} · 有分歧：{disagreements} · 已编辑：{edited}",
    ),
    "pairs.need_scores": (
        "Sorting by score needs a run's scores: pick one (python -m ctllm score makes them).",
        "按得分排序需要某次运行的得分：请选择一个（python -m ctllm score 可生成）。",
    ),
    "pairs.first_page": ("This is the first page.", "这是第一页。"),
    "pairs.last_page": ("This is the last page.", "这是最后一页。"),
    "pairs.first_pair": ("This is the first pair of the list.", "这是列表中的第一个偏好对。"),
    "pairs.last_pair": ("This is the last pair of the list.", "这是列表中的最后一个偏好对。"),
    "pairs.no_pair_open": ("No pair is open.", "没有打开的偏好对。"),
    "pairs.pick_collection": ("Pick a collection first.", "请先选择一个数据集。"),
    "pairs.all_labelled": ("Every pair in this list has your label.", "此列表中的每个偏好对都有你的标注。"),
    "pairs.nothing_to_undo": ("Nothing to undo.", "没有可撤销的操作。"),
    "pairs.undid": ("Undid your “{verdict}” on pair {pair}.", "已撤销你对偏好对 {pair} 的“{verdict}”。"),
    # Synthesize panel (Pairs tab, admin only).
    "synth.panel": ("Synthesize pairs (admin)", "合成偏好对（管理员）"),
    "synth.explain": (
        "Chosen = the file's own answer (or the strong model's when a prompt has none); rejected = the weak model's "
        "answer. Runs as a background job; pairs appear in the collection as they are made, ready for review. "
        "Empty, cut-off, wrong-language and near-identical pairs are dropped and counted.",
        "chosen = 文件自带的回答（没有时用强模型的回答）；rejected = 弱模型的回答。作为后台任务运行；"
        "生成的偏好对随即出现在数据集中，可供审阅。空回答、被截断、语言不符和几乎相同的对会被丢弃并计数。",
    ),
    "synth.file": (
        "Prompts file (alpaca, sharegpt, JSON/JSONL, CSV, Parquet, or .txt one prompt a line)",
        "提示文件（alpaca、sharegpt、JSON/JSONL、CSV、Parquet，或每行一个提示的 .txt）",
    ),
    "synth.path": ("…or a path on the server", "……或服务器上的路径"),
    "synth.collection": ("Collection (empty: synth-<file name>)", "数据集（留空：synth-<文件名>）"),
    "synth.weak": ("Weak model (writes the rejected answers)", "弱模型（生成 rejected 回答）"),
    "synth.strong": (
        "Strong model (writes chosen answers for prompts without one)",
        "强模型（为没有回答的提示生成 chosen 回答）",
    ),
    "synth.max_new_tokens": ("Max new tokens", "最大生成长度"),
    "synth.batch_size": ("Batch size (prompts per forward)", "批大小（每次前向的提示数）"),
    "synth.limit": ("Limit (0: all prompts)", "数量上限（0：全部）"),
    "synth.temperature": ("Temperature (0: greedy)", "温度（0：贪心）"),
    "synth.top_p": ("Top-p", "Top-p"),
    "synth.seed": ("Seed (-1: the earlier run's, or new)", "随机种子（-1：沿用上次或新抽取）"),
    "synth.near": ("Near-identical below (edit distance)", "几乎相同阈值（编辑距离）"),
    "synth.split": ("Split of the new pairs", "新偏好对的划分"),
    "synth.threads": ("CPU threads (0: default)", "CPU 线程数（0：默认）"),
    "synth.devices": ("Devices (cpu, or GPU ids such as 0)", "设备（cpu，或 GPU 编号如 0）"),
    "synth.start": ("Start synthesis", "开始合成"),
    "synth.cancel": ("Cancel", "取消"),
    "synth.resume": ("Resume", "继续"),
    "synth.job": ("Synthesis job shown", "显示的合成任务"),
    "synth.log": ("Log (last lines)", "日志（最后几行）"),
    # Train tab.
    "train.model": ("SFT model (policy starts here)", "SFT 模型（策略模型的起点）"),
    "train.ref_model": ("Reference model (empty: same as the SFT model)", "参考模型（留空：与 SFT 模型相同）"),
    "train.collection": ("Training pairs (collection)", "训练数据（数据集）"),
    "train.eval_data": (
        "Held-out pairs (empty: split 'test' if marked, else a fraction)",
        "验证集（留空：使用标记为 test 的对，否则按比例划分）",
    ),
    "train.eval_fraction": ("Held-out fraction (when no split is marked)", "验证集比例（无标记时）"),
    "train.preset": ("Preset", "预设"),
    "train.run_name": ("Run name (empty: automatic)", "运行名称（留空：自动）"),
    "train.hyper": ("Hyperparameters", "超参数"),
    "train.advanced": ("More settings", "更多设置"),
    "train.devices": ("Devices (e.g. cpu, cuda, cuda:0,1)", "设备（例如 cpu、cuda、cuda:0,1）"),
    "train.processes": ("Processes", "进程数"),
    "train.show_command": ("Show command", "显示命令"),
    "train.command": ("Command for the same run", "同一运行的命令行"),
    "train.start": ("Start training", "开始训练"),
    "train.cancel": ("Cancel", "取消"),
    "train.resume": ("Resume", "继续"),
    "train.watch": ("Run shown", "显示的运行"),
    "train.status": ("Status", "状态"),
    "train.log": ("Log (last lines)", "日志（最后几行）"),
    "train.history": ("Job history", "任务历史"),
    "train.refresh": ("Refresh", "刷新"),
    "train.compare": ("Compare runs", "比较运行"),
    "train.compare_runs": ("Runs", "运行"),
    "train.compare_metric": ("Metric", "指标"),
    "train.eval_box": ("Evaluation: SFT vs DPO (click a run in the history)", "评估：SFT 对比 DPO（点击历史中的运行）"),
    "train.eval_run": ("Run", "运行"),
    "train.eval_csv": ("Table as CSV", "表格（CSV）"),
    "train.explain": (
        "**How to read the plots.** The loss starts at ln 2 ≈ 0.693 and the margin (chosen reward minus rejected "
        "reward) should grow while accuracy rises towards 1. Both rewards often fall below zero while the margin "
        "grows: that is normal, because the reward is how much more (or less) likely the policy makes a response "
        "than the reference model did, and only the gap between them is trained. With an NLL term (rpo_alpha > 0) "
        "the logged loss is DPO + α·NLL and starts near the chosen answers' NLL (often 5 to 8), so the loss plot "
        "then shows the DPO part (from ln 2) and the NLL (right axis) separately.",
        "**如何看这些曲线。** 损失从 ln 2 ≈ 0.693 开始，奖励差（chosen 奖励减 rejected 奖励）应逐渐增大，"
        "准确率逐渐升向 1。两个奖励常常一起降到零以下而奖励差仍在增大：这是正常的，因为奖励衡量的是策略模型相对参考模型"
        "给某个回答的概率高了（或低了）多少，训练只拉开两者之间的差距。使用 NLL 项（rpo_alpha > 0）时，记录的损失是 "
        "DPO + α·NLL，起点接近 chosen 回答的 NLL（常在 5 到 8 之间），因此损失图会分开显示 DPO 部分（从 ln 2 开始）"
        "和 NLL（右侧坐标轴）。",
    ),
    "train.confirm_cancel": ("Confirm cancel", "确认取消"),
    "train.score": ("Score pairs with this run", "用此运行给偏好对打分"),
    "train.score_collection": ("Collection to score", "要打分的数据集"),
    "train.score_run": ("Run to score with", "用于打分的运行"),
    "train.score_pick": (
        "Click a finished run in the history to score a collection with it (for “sort by run score” in Pairs).",
        "点击历史中已完成的运行，用它给某个数据集打分（供偏好对页面“按运行分数排序”使用）。",
    ),
    # Chat tab.
    "chat.left_model": ("Left: SFT (reference) model", "左侧：SFT（参考）模型"),
    "chat.right_model": ("Right: DPO model (a run or any model spec)", "右侧：DPO 模型（某次运行或任意模型）"),
    "chat.beta": ("β for the implicit reward", "隐式奖励的 β"),
    "chat.blind": ("Blind mode (sides shuffled, names hidden until the vote)", "盲评模式（左右随机，投票后显示名称）"),
    "chat.input": ("Message to both models", "发给两个模型的消息"),
    "chat.send": ("Send", "发送"),
    "chat.clear": ("Clear", "清空"),
    "chat.regen": ("Regenerate", "重新生成"),
    "chat.sampling": ("Sampling (shared by both sides)", "采样参数（两侧共用）"),
    "chat.temperature": ("Temperature (0: greedy)", "温度（0：贪心）"),
    "chat.top_p": ("Top-p", "Top-p"),
    "chat.max_new_tokens": ("Max new tokens", "最大生成长度"),
    "chat.seed": ("Seed", "随机种子"),
    "chat.vote_left": ("◀ Left better", "◀ 左边更好"),
    "chat.vote_right": ("Right better ▶", "右边更好 ▶"),
    "chat.vote_tie": ("= Tie", "= 一样好"),
    "chat.vote_bothbad": ("✗ Both bad", "✗ 都不好"),
    "chat.see_votes": ("See your votes in the Pairs tab", "在“偏好对”页查看你的投票"),
    "chat.same_model": (
        "⚠ Both sides are the same model ({model}): the answers differ only by sampling, and implicit rewards are 0.",
        "⚠ 两侧是同一个模型（{model}）：回答的差别只来自采样，隐式奖励为 0。",
    ),
    "chat.no_run_yet": (
        "No finished training run yet: the right side switches to the newest run as soon as one finishes (Train tab).",
        "还没有完成的训练运行：一旦有运行完成（训练页），右侧会自动切换到最新的运行。",
    ),
    "chat.english_only": (
        "The embedded model (SmolLM2-135M) answers English only; for Chinese pick the CT-LLM presets "
        "(m-a-p/CT-LLM-SFT, m-a-p/CT-LLM-SFT-DPO).",
        "内置模型（SmolLM2-135M）只能用英文回答；中文请选择 CT-LLM 预设（m-a-p/CT-LLM-SFT、m-a-p/CT-LLM-SFT-DPO）。",
    ),
}


def t(key: str, lang: str = "en") -> str:
    """The string for ``key`` in ``lang`` (English when the language or key is unknown)."""
    pair = STRINGS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "zh" else pair[0]


@dataclass
class Translator:
    """Remembers which component shows which string, so the language switch can update them all."""

    bindings: list[tuple[Any, str, str, str]] = field(default_factory=list)

    def bind(self, component: Any, key: str, attr: str = "label", template: str = "{}") -> Any:
        """Show string ``key`` as ``attr`` of ``component`` (``template`` wraps it, e.g. a Markdown heading)."""
        if key not in STRINGS:
            raise KeyError(f"no interface string {key!r}")
        self.bindings.append((component, key, attr, template))
        return component

    @property
    def components(self) -> list[Any]:
        return [binding[0] for binding in self.bindings]

    def updates(self, lang: str) -> list[Any]:
        return [gr.update(**{attr: template.format(t(key, lang))}) for _, key, attr, template in self.bindings]
