"""Interface strings in English and Chinese, switchable at run time, per browser session.

:data:`STRINGS` holds two kinds of entries:
- ``"<elem_id>.<attr>"``: what the component with that ``elem_id`` shows as ``attr`` (label, info, placeholder,
  value), plus ``"<elem_id>.choice.<value>"`` and ``"<elem_id>.header.<name>"`` for choice labels and table
  headers. Components are created with just their ``elem_id``; :meth:`Translator.localize` walks the built
  Blocks once, gives them their English text and makes the language switch's updates.
- dotted keys for what handlers write, through :func:`t`, which speaks the language of the session being served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ctllm.dpo.config import LOSS_TYPES
from ctllm.dpo.loss_fields import loss_group, paper_summary
from ctllm.ui.help import HELP

LANGUAGES = ("en", "zh")
LANGUAGE_CHOICES = [("English", "en"), ("中文", "zh")]

STRINGS: dict[str, tuple[str, str]] = {
    # Component texts by elem_id (see Translator.localize).
    "app-title.value": ("## CT-LLM DPO Studio", "## CT-LLM DPO 工作台"),
    "app-subtitle.value": (
        "Collect and label preference pairs, train with DPO, and compare the models side by side.",
        "收集并标注偏好对，用 DPO 训练，再并排比较模型。",
    ),
    "ui-lang.label": ("Interface language", "界面语言"),
    "pairs-context-box.label": ("System prompt and earlier turns", "系统提示与之前的对话"),
    "pairs-edit-box.label": (
        "Edit a response (saved as a new version; the original is kept)",
        "编辑回答（另存为新版本，保留原版）",
    ),
    "pairs-add-box.label": ("Add a pair by hand", "手动添加偏好对"),
    "pairs-stats-box.label": ("Progress, agreement and statistics", "进度、一致性与统计"),
    "pairs-import-box.label": ("Import", "导入"),
    "pairs-export-box.label": ("Export", "导出"),
    "pairs-first-heading.value": ("#### Response 1", "#### 回答 1"),
    "pairs-second-heading.value": ("#### Response 2", "#### 回答 2"),
    "pairs-keys.value": (
        "Keys: 1 2 3 4 vote · s skip · ← → move · u undo (not while typing in a box).",
        "快捷键：1 2 3 4 投票 · s 跳过 · ← → 移动 · u 撤销（在输入框中输入时无效）。",
    ),
    "pairs-tab.label": ("Pairs", "偏好对"),
    "pairs-collection.label": ("Collection", "数据集"),
    "pairs-search.label": ("Search (Chinese or English substring)", "搜索（中英文子串）"),
    "pairs-search-run.value": ("Search", "搜索"),
    "pairs-language.label": ("Language", "语言"),
    "pairs-source.label": ("Source", "来源"),
    "pairs-label-state.label": ("Label state", "标注状态"),
    "pairs-sort.label": ("Sort", "排序"),
    "pairs-score-name.label": ("Run for score sort", "按得分排序所用的运行"),
    "pairs-edit-text.label": ("New text", "新文本"),
    "pairs-edit-save.value": ("Save as new version", "保存为新版本"),
    "pairs-add-collection.label": ("Into collection", "加入数据集"),
    "pairs-add-system.label": ("System prompt (optional)", "系统提示（可选）"),
    "pairs-add-prompt.label": ("Prompt", "提示"),
    "pairs-add-save.value": ("Add pair", "添加"),
    "pairs-stats-run.value": ("Compute statistics", "计算统计"),
    "pairs-import-mapping.label": (
        'Column mapping when detection fails (JSON, e.g. {"prompt": "question", "chosen": "good", "rejected": "bad"})',
        '检测失败时的列映射（JSON，例如 {"prompt": "question", "chosen": "good", "rejected": "bad"}）',
    ),
    "pairs-import-abort.label": (
        "Abort on the first bad row (default: skip and report)",
        "遇到错误行即中止（默认：跳过并报告）",
    ),
    "pairs-import-run.value": ("Import", "导入"),
    "pairs-export-file.label": ("Download", "下载"),
    "pairs-prompt-heading.value": ("#### Prompt", "#### 提示"),
    "pairs-table.label": ("Pairs on this page (click a row to open it)", "本页偏好对（点击一行打开）"),
    "pairs-table-legend.value": (
        "Δ len: characters of the chosen response minus the rejected one (as stored; below 0: chosen is shorter) "
        "· mine: your verdict · n: labels on the pair, by everyone",
        "Δ 长度：chosen 回答字符数减去 rejected 回答字符数（按存储；小于 0 表示 chosen 更短）· "
        "我的：你的判断 · 标注数：该偏好对的标注数（所有人）",
    ),
    "pairs-edit-which.label": ("Which response", "哪个回答"),
    "pairs-edit-load.value": ("Load current text", "载入当前文本"),
    "pairs-add-chosen.label": ("Better response (chosen)", "更好的回答（chosen）"),
    "pairs-add-rejected.label": ("Worse response (rejected)", "较差的回答（rejected）"),
    "pairs-import-file.label": (
        "Upload a file (JSON, JSONL, Parquet, CSV, TSV)",
        "上传文件（JSON、JSONL、Parquet、CSV、TSV）",
    ),
    "pairs-export-format.label": ("Export format", "导出格式"),
    "pairs-export-run.value": ("Export collection", "导出数据集"),
    "pairs-prev.value": ("← Previous", "← 上一个"),
    "pairs-next.value": ("Next →", "下一个 →"),
    "pairs-undo.value": ("u · Undo", "u · 撤销"),
    "pairs-reason.label": ("Reason (optional)", "理由（可选）"),
    "pairs-prev-page.value": ("◀ Page", "◀ 上一页"),
    "pairs-page.label": ("Page", "页码"),
    "pairs-go.value": ("Go", "跳转"),
    "pairs-next-page.value": ("Page ▶", "下一页 ▶"),
    "pairs-import-path.label": ("…or a path on the server / a hub dataset id", "……或服务器上的路径 / Hub 数据集 id"),
    "pairs-import-format.label": ("Format (auto: detect)", "格式（auto：自动检测）"),
    "pairs-import-collection.label": ("Collection name", "数据集名称"),
    "vote-first.value": ("1 · First better", "1 · 回答 1 更好"),
    "vote-second.value": ("2 · Second better", "2 · 回答 2 更好"),
    "vote-tie.value": ("3 · Tie", "3 · 一样好"),
    "vote-bothbad.value": ("4 · Both bad", "4 · 都不好"),
    "vote-skip.value": ("s · Skip", "s · 跳过"),
    "synth-panel.label": ("Synthesize pairs (admin)", "合成偏好对（管理员）"),
    "synth-explain.value": (
        "Chosen = the file's own answer (or the strong model's when a prompt has none); rejected = the weak model's "
        "answer. Runs as a background job; pairs appear in the collection as they are made, ready for review. "
        "Empty, cut-off, wrong-language and near-identical pairs are dropped and counted.",
        "chosen = 文件自带的回答（没有时用强模型的回答）；rejected = 弱模型的回答。作为后"
        "台任务运行；生成的偏好对随即出现在数据集中，可供审阅。空回答、被截断、语言不符和几乎相同的对会被丢弃"
        "并计数。",
    ),
    "synth-log.label": ("Log (last lines)", "日志（最后几行）"),
    "synth-file.label": (
        "Prompts file (alpaca, sharegpt, JSON/JSONL, CSV, Parquet, or .txt one prompt a line)",
        "提示文件（alpaca、sharegpt、JSON/JSONL、CSV、Parquet，或每行一个提示的 .txt）",
    ),
    "synth-weak.label": ("Weak model (writes the rejected answers)", "弱模型（生成 rejected 回答）"),
    "synth-strong.label": (
        "Strong model (writes chosen answers for prompts without one)",
        "强模型（为没有回答的提示生成 chosen 回答）",
    ),
    "synth-max-new.label": ("Max new tokens", "最大生成长度"),
    "synth-batch-size.label": ("Batch size (prompts per forward)", "批大小（每次前向的提示数）"),
    "synth-limit.label": ("Limit (0: all prompts)", "数量上限（0：全部）"),
    "synth-temperature.label": ("Temperature (0: greedy)", "温度（0：贪心）"),
    "synth-top-p.label": ("Top-p", "Top-p"),
    "synth-seed.label": ("Seed (-1: the earlier run's, or new)", "随机种子（-1：沿用上次或新抽取）"),
    "synth-near-threshold.label": ("Near-identical below (edit distance)", "几乎相同阈值（编辑距离）"),
    "synth-split.label": ("Split of the new pairs", "新偏好对的划分"),
    "synth-threads.label": ("CPU threads (0: default)", "CPU 线程数（0：默认）"),
    "synth-devices.label": ("Devices (cpu, or GPU ids such as 0)", "设备（cpu，或 GPU 编号如 0）"),
    "synth-start.value": ("Start synthesis", "开始合成"),
    "synth-job.label": ("Synthesis job shown", "显示的合成任务"),
    "synth-cancel.value": ("Cancel", "取消"),
    "synth-resume.value": ("Resume", "继续"),
    "synth-path.label": ("…or a path on the server", "……或服务器上的路径"),
    "synth-collection.label": ("Collection (empty: synth-<file name>)", "数据集（留空：synth-<文件名>）"),
    "train-hyper-box.label": ("Hyperparameters", "超参数"),
    "train-advanced-box.label": ("More settings", "更多设置"),
    "train-history-box.label": ("Job history", "任务历史"),
    "train-eval-box.label": (
        "Evaluation: SFT vs DPO (click a run in the history)",
        "评估：SFT 对比 DPO（点击历史中的运行）",
    ),
    "train-compare-box.label": ("Compare runs", "比较运行"),
    "train-tab.label": ("Train", "训练"),
    "train-refresh.value": ("Refresh", "刷新"),
    "train-preset.label": ("Preset", "预设"),
    "train-model.label": ("SFT model (policy starts here)", "SFT 模型（策略模型的起点）"),
    "train-ref-model.label": ("Reference model (empty: same as the SFT model)", "参考模型（留空：与 SFT 模型相同）"),
    "train-data.label": ("Training pairs (collection)", "训练数据（数据集）"),
    "train-command.label": ("Command for the same run", "同一运行的命令行"),
    "train-explain.value": (
        "**How to read the plots.** The loss starts at ln 2 ≈ 0.693 and the margin (chosen reward minus rejected "
        "reward) should grow while accuracy rises towards 1. Both rewards often fall below zero while the margin "
        "grows: that is normal, because the reward is how much more (or less) likely the policy makes a response "
        "than the reference model did, and only the gap between them is trained. With an NLL term (rpo_alpha "
        "> 0) the logged loss is DPO + α·NLL and starts near the chosen answers' NLL (often 5 to 8), so the loss "
        "plot then shows the DPO part (from ln 2) and the NLL (right axis) separately.",
        "**如何看这些曲线。** 损失从 ln 2 ≈ 0.693 开始，奖励差（chosen 奖励减 re"
        "jected 奖励）应逐渐增大，准确率逐渐升向 1。两个奖励常常一起降到零以下而奖励差仍在增大：这是"
        "正常的，因为奖励衡量的是策略模型相对参考模型给某个回答的概率高了（或低了）多少，训练只拉开两者之间的"
        "差距。使用 NLL 项（rpo_alpha > 0）时，记录的损失是 DPO + α·NLL，起点接"
        "近 chosen 回答的 NLL（常在 5 到 8 之间），因此损失图会分开显示 DPO 部分（从 "
        "ln 2 开始）和 NLL（右侧坐标轴）。",
    ),
    "train-log.label": ("Log (last lines)", "日志（最后几行）"),
    "train-score-target.value": (
        "Click a finished run in the history to score a collection with it (for “sort by run score” in Pairs).",
        "点击历史中已完成的运行，用它给某个数据集打分（供偏好对页面“按运行分数排序”使用）。",
    ),
    "train-score-collection.label": ("Collection to score", "要打分的数据集"),
    "train-score.value": ("Score pairs with this run", "用此运行给偏好对打分"),
    "train-eval-run.label": ("Run", "运行"),
    # Publish panel (Train tab's run view, admin only).
    "train-publish-box.label": (
        "Publish this run (admin): model card, hub upload", "发布此运行（管理员）：模型卡、上传到 Hub"
    ),
    "train-publish-explain.value": (
        "The card is written from what the run recorded; edit it, save it, then publish. Without a token, or "
        "offline, the exact folders that would be uploaded are written under the exports folder. The token is "
        "used for this upload only and never stored. GGUF for llama.cpp / Ollama: "
        "`python -m ctllm export-gguf run:NAME --dtype q8_0`.",
        "模型卡根据运行记录生成；可编辑、保存后再发布。没有令牌或离线时，会在导出目录写出将要上传的完整文件夹。"
        "令牌只用于本次上传，不会保存。llama.cpp 与 `Ollama` 所用的 `GGUF` 文件："
        "`python -m ctllm export-gguf run:NAME --dtype q8_0`。",
    ),
    "train-publish-edit-tab.label": ("Edit (Markdown)", "编辑"),
    "train-publish-preview-tab.label": ("Preview", "预览"),
    "train-publish-card.label": ("Model card (README.md)", "模型卡（README.md）"),
    "train-publish-save.value": ("Save card", "保存模型卡"),
    "train-publish-regenerate.value": ("Write the card again from the run", "根据运行重新生成模型卡"),
    "train-publish-repo.label": ("Hub repository (OWNER/NAME)", "Hub 仓库（OWNER/NAME）"),
    "train-publish-token.label": ("Hub token (write access; not stored)", "Hub 令牌（需写权限；不会保存）"),
    "train-publish-private.label": ("Private", "私有"),
    "train-publish-with-data.label": (
        "Also the training data (OWNER/NAME-pairs)", "同时发布训练数据（OWNER/NAME-pairs）"
    ),
    "train-publish-merged.label": ("LoRA: also the merged model", "LoRA：同时发布合并后的模型"),
    "train-publish-go.value": ("Publish", "发布"),
    "train-eval-csv.label": ("Table as CSV", "表格（CSV）"),
    "train-compare-runs.label": ("Runs", "运行"),
    "train-compare-metric.label": ("Metric", "指标"),
    "train-eval-data.label": (
        "Held-out pairs (empty: split 'test' if marked, else a fraction)",
        "验证集（留空：使用标记为 test 的对，否则按比例划分）",
    ),
    "train-eval-fraction.label": ("Held-out fraction (when no split is marked)", "验证集比例（无标记时）"),
    "train-show-command.value": ("Show command", "显示命令"),
    "train-start.value": ("Start training", "开始训练"),
    "train-job.label": ("Run shown", "显示的运行"),
    "train-cancel.value": ("Cancel", "取消"),
    "train-resume.value": ("Resume", "继续"),
    "train-run-name.label": ("Run name (empty: automatic)", "运行名称（留空：自动）"),
    "train-devices.label": ("Devices (e.g. cpu, cuda, cuda:0,1)", "设备（例如 cpu、cuda、cuda:0,1）"),
    "train-num-processes.label": ("Processes", "进程数"),
    "chat-left-model.label": ("Left: SFT (reference) model", "左侧：SFT（参考）模型"),
    "chat-right-model.label": ("Right: DPO model (a run or any model spec)", "右侧：DPO 模型（某次运行或任意模型）"),
    "chat-beta.label": ("β for the implicit reward", "隐式奖励的 β"),
    "chat-blind.label": (
        "Blind mode (sides shuffled, names hidden until the vote)",
        "盲评模式（左右随机，投票后显示名称）",
    ),
    "chat-input.label": ("Message to both models", "发给两个模型的消息"),
    "chat-send.value": ("Send", "发送"),
    "chat-see-votes.value": ("See your votes in the Pairs tab", "在“偏好对”页查看你的投票"),
    "chat-clear.value": ("Clear", "清空"),
    "chat-temperature.label": ("Temperature (0: greedy)", "温度（0：贪心）"),
    "chat-top-p.label": ("Top-p", "Top-p"),
    "chat-max-new-tokens.label": ("Max new tokens", "最大生成长度"),
    "chat-seed.label": ("Seed", "随机种子"),
    "chat-sampling-box.label": ("Sampling (shared by both sides)", "采样参数（两侧共用）"),
    "chat-english-only.value": (
        "The embedded model (SmolLM2-135M) answers English only; "
        "for Chinese pick the CT-LLM presets (m-a-p/CT-LLM-SFT, m-a-p/CT-LLM-SFT-DPO).",
        "内置模型（SmolLM2-135M）只能用英文回答；中文请选择 CT-LLM 预设（m-a-p/CT-LLM-SFT、m-a-p/CT-LLM-SFT-DPO）。",
    ),
    "chat-vote-left.value": ("◀ Left better", "◀ 左边更好"),
    "chat-vote-right.value": ("Right better ▶", "右边更好 ▶"),
    "chat-vote-tie.value": ("= Tie", "= 一样好"),
    "chat-vote-bothbad.value": ("✗ Both bad", "✗ 都不好"),
    "chat-regen-left.value": ("Regenerate", "重新生成"),
    "chat-regen-right.value": ("Regenerate", "重新生成"),
    "chat-tab.label": ("Chat", "对话"),
    "help-tab.label": ("Help", "帮助"),
    # Train tab: the hyperparameter fields (label and hint).
    "train-beta.label": ("β", "β"),
    "train-beta.info": (
        "β: how far the policy may move from the reference (CT-LLM: 0.5)",
        "β：策略模型可偏离参考模型的程度（CT-LLM：0.5）",
    ),
    "train-loss-type.label": ("loss type", "损失类型"),
    "train-loss-type.info": (
        "Reference: needs the reference model · Reference-free: loads none · Unpaired (KTO): not available yet · "
        "type several reference losses comma-separated to sum them (e.g. sigmoid,bco_pair,sft)",
        "需参考：需要参考模型 · 免参考：不加载参考模型 · 非成对（KTO）：暂不可用 · "
        "输入以逗号分隔的多个需参考损失即可相加（如 sigmoid,bco_pair,sft）",
    ),
    "train-lr.label": ("lr", "学习率"),
    "train-lr.info": ("learning rate (CT-LLM: 1e-6 full fine-tuning)", "学习率（CT-LLM：全参数微调 1e-6）"),
    "train-batch-size.label": ("batch size", "批大小"),
    "train-batch-size.info": ("pairs per device per micro-batch", "每个设备每个微批次的偏好对数"),
    "train-grad-accum.label": ("grad accum", "梯度累积"),
    "train-grad-accum.info": ("micro-batches per optimizer step", "每次优化器更新的微批次数"),
    "train-epochs.label": ("epochs", "轮数"),
    "train-epochs.info": ("passes over the training pairs", "遍历训练偏好对的轮数"),
    "train-max-steps.label": ("max steps", "最大步数"),
    "train-max-steps.info": (
        "0: run the epochs; > 0: stop after this many steps",
        "0：按轮数训练；> 0：达到该步数后停止",
    ),
    "train-max-length.label": ("max length", "最大长度"),
    "train-max-length.info": ("tokens of prompt + response kept", "保留的提示 + 回答 token 数"),
    "train-lora.label": ("lora", "LoRA"),
    "train-lora.info": ("LoRA adapter instead of full fine-tuning", "用 LoRA 适配器代替全参数微调"),
    "train-lora-r.label": ("lora r", "LoRA 秩"),
    "train-lora-r.info": ("LoRA rank", "LoRA 的秩 r"),
    "train-warmup-ratio.label": ("warmup ratio", "预热比例"),
    "train-warmup-ratio.info": ("share of steps with a rising learning rate", "学习率逐步上升的步数占比"),
    "train-weight-decay.label": ("weight decay", "权重衰减"),
    "train-weight-decay.info": ("AdamW weight decay", "AdamW 权重衰减"),
    "train-eval-every.label": ("eval every", "评估间隔"),
    "train-eval-every.info": (
        "steps between held-out evaluations (0: at the end)",
        "两次验证集评估之间的步数（0：仅在结束时）",
    ),
    "train-seed.label": ("seed", "随机种子"),
    "train-seed.info": ("random seed", "随机种子"),
    "train-label-smoothing.label": ("label smoothing", "标签平滑"),
    "train-label-smoothing.info": (
        "ε: the share of labels taken as flipped (cDPO, robust; EXO needs > 0)",
        "ε：视为标反的标签比例（cDPO、robust；EXO 须 > 0）",
    ),
    "train-rpo-alpha.label": ("rpo alpha", "RPO α"),
    "train-rpo-alpha.info": (
        "RPO: weight of the chosen NLL (0: off); the loss plot then splits DPO and NLL",
        "RPO：chosen 回答 NLL 的权重（0：关闭）；此时损失图分开显示 DPO 与 NLL",
    ),
    "train-scheduler.label": ("scheduler", "学习率调度"),
    "train-scheduler.info": ("learning-rate schedule", "学习率调度方式"),
    "train-lora-alpha.label": ("lora alpha", "LoRA α"),
    "train-lora-alpha.info": ("LoRA α", "LoRA 缩放系数 α"),
    "train-precompute-ref.label": ("precompute ref", "预计算参考"),
    "train-precompute-ref.info": (
        "reference log-probs in one pass before training",
        "训练前一次性计算参考模型的对数概率",
    ),
    "train-max-grad-norm.label": ("max grad norm", "梯度裁剪"),
    "train-max-grad-norm.info": ("gradient clipping (0: off)", "梯度范数裁剪（0：关闭）"),
    "train-save-every.label": ("save every", "保存间隔"),
    "train-save-every.info": ("steps between checkpoints (0: at the end)", "两次保存检查点之间的步数（0：仅在结束时）"),
    "train-logging-every.label": ("logging every", "日志间隔"),
    "train-logging-every.info": ("steps between metric lines", "两次记录指标之间的步数"),
    "train-final-eval.label": ("final eval", "最终评估"),
    "train-final-eval.info": (
        "at the end: SFT vs DPO on held-out pairs and prompt lists",
        "结束时：在验证偏好对和提示列表上比较 SFT 与 DPO",
    ),
    "train-final-eval-limit.label": ("final eval limit", "最终评估上限"),
    "train-final-eval-limit.info": (
        "prompts per list in that evaluation (0: all)",
        "该评估中每个列表的提示数（0：全部）",
    ),
    "train-devices.info": ("cpu, or GPU ids such as 0 or 0,1", "cpu，或 GPU 编号如 0 或 0,1"),
    "train-num-processes.info": ("1, or N processes through accelerate", "1，或通过 accelerate 启动 N 个进程"),
    "pairs-language.choice.all": ("all", "全部"),
    "pairs-language.choice.zh": ("Chinese", "中文"),
    "pairs-language.choice.en": ("English", "英文"),
    "pairs-language.choice.other": ("other", "其他"),
    "pairs-label-state.choice.all": ("all", "全部"),
    "pairs-label-state.choice.not_mine": ("not labelled by me", "我未标注"),
    "pairs-label-state.choice.unlabelled": ("unlabelled (by anyone)", "未标注（所有人）"),
    "pairs-label-state.choice.mine": ("labelled by me", "我已标注"),
    "pairs-label-state.choice.labelled": ("labelled (by anyone)", "已标注（任何人）"),
    "pairs-label-state.choice.disagreement": ("disagreement", "有分歧"),
    "pairs-sort.choice.id": ("import order", "导入顺序"),
    "pairs-sort.choice.length_diff": ("length difference, chosen shorter first", "长度差，chosen 较短的在前"),
    "pairs-sort.choice.-length_diff": ("length difference, chosen longer first", "长度差，chosen 较长的在前"),
    "pairs-sort.choice.score": ("run score: lowest margin first", "运行得分：奖励差最小的在前"),
    "pairs-edit-which.choice.first": ("Response 1", "回答 1"),
    "pairs-edit-which.choice.second": ("Response 2", "回答 2"),
    "pairs-table.header.lang": ("lang", "语言"),
    "train-history.header.job": ("job", "任务"),
    "train-history.header.run": ("run", "运行"),
    "train-history.header.state": ("state", "状态"),
    "train-history.header.preset": ("preset", "预设"),
    "train-history.header.data hash": ("data hash", "数据哈希"),
    "train-history.header.best eval acc.": ("best eval acc.", "最佳验证准确率"),
    "train-history.header.pref. acc. SFT → DPO": ("pref. acc. SFT → DPO", "偏好准确率 SFT → DPO"),
    "train-history.header.refusals SFT → DPO": ("refusals SFT → DPO", "拒答率 SFT → DPO"),
    "train-history.header.answers SFT → DPO": ("answers SFT → DPO", "回答率 SFT → DPO"),
    "train-history.header.duration": ("duration", "时长"),
    "train-history.header.started": ("started", "开始时间"),
    "pairs-table.header.prompt": ("prompt", "提示"),
    "pairs-table.header.Δ len": ("Δ len", "Δ 长度"),
    "pairs-table.header.mine": ("mine", "我的"),
    "pairs-table.header.n": ("n", "标注数"),
    "pairs-table.header.id": ("id", "编号"),
    # Handler messages (see t).
    "app.title": ("CT-LLM DPO Studio", "CT-LLM DPO 工作台"),
    "app.user": ("Signed in as", "当前用户"),
    "app.role.viewer": ("viewer", "查看者"),
    "app.role.annotator": ("annotator", "标注者"),
    "app.role.admin": ("admin", "管理员"),
    # Pairs tab.
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
    "pairs.all": ("all", "全部"),
    "pairs.no_pair": (
        "No pair to show: pick a collection or change the filters.",
        "没有可显示的偏好对：请选择数据集或调整筛选条件。",
    ),
    "pairs.no_context": ("_(no system prompt or earlier turns)_", "_（没有系统提示或之前的对话）_"),
    "pairs.info_pair": ("**Pair {pair}**", "**偏好对 {pair}**"),
    "pairs.info_split": ("split {split}", "划分 {split}"),
    "pairs.info_edited": ("edited version of {parent}", "偏好对 {parent} 的编辑版本"),
    "pairs.info_older": ("⚠ an older version", "⚠ 旧版本"),
    "pairs.info_labels": ("{n} label(s)", "{n} 个标注"),
    "pairs.info_mine": ("your verdict: **{verdict}**", "你的判断：**{verdict}**"),
    "pairs.info_margin": ("{run} margin {margin}", "{run} 奖励差 {margin}"),
    "pairs.lang.zh": ("zh", "中文"),
    "pairs.lang.en": ("en", "英文"),
    "pairs.lang.other": ("other", "其他"),
    "pairs.verdict.first": ("first better", "回答 1 更好"),
    "pairs.verdict.second": ("second better", "回答 2 更好"),
    "pairs.verdict.tie": ("tie", "一样好"),
    "pairs.verdict.both_bad": ("both bad", "都不好"),
    "pairs.verdict.skip": ("skipped", "已跳过"),
    "pairs.voted": ("Pair {pair}: {verdict}.", "偏好对 {pair}：{verdict}。"),
    "pairs.saved_edit": (
        "Saved as pair {new}, a new version of pair {old}.",
        "已另存为偏好对 {new}，是偏好对 {old} 的新版本。",
    ),
    "pairs.empty_prompt": ("The prompt is empty.", "提示为空。"),
    "pairs.empty_chosen": ("The chosen response is empty.", "chosen 回答为空。"),
    "pairs.empty_rejected": ("The rejected response is empty.", "rejected 回答为空。"),
    "pairs.identical": ("The two responses are identical.", "两个回答完全相同。"),
    "pairs.admins_only": (
        "Only admins add pairs to the imported collection {name}; use {hand}.",
        "只有管理员可以向导入的数据集 {name} 添加偏好对；请使用 {hand}。",
    ),
    "pairs.added": ("Added pair {pair} to {collection}.", "已将偏好对 {pair} 加入 {collection}。"),
    "pairs.no_split": ("none", "无"),
    "pairs.stats_languages": ("languages: {languages} · splits: {splits}", "语言：{languages} · 划分：{splits}"),
    "pairs.stats_agreement": ("agreement: {agreement}", "一致性：{agreement}"),
    "pairs.stats_length": (
        "length bias: chosen is the longer response in {share} of pairs ({equal} equal); "
        "mean characters chosen {chosen} vs rejected {rejected}",
        "长度偏差：{share} 的偏好对中 chosen 是较长的回答（{equal} 个等长）；"
        "平均字符数 chosen {chosen}，rejected {rejected}",
    ),
    "pairs.stats_length_none": ("length bias: no pairs", "长度偏差：没有偏好对"),
    "pairs.stats_duplicates": (
        "duplicates: {prompts} prompts appear in more than one pair ({sharing} pairs); {elsewhere} pairs are also "
        "in another collection; {skipped} skipped at import",
        "重复：{prompts} 个提示出现在多个偏好对中（共 {sharing} 个偏好对）；{elsewhere} 个偏好对也在其他数据集中；"
        "导入时跳过 {skipped} 个",
    ),
    "pairs.import_nothing_given": (
        "Upload a file or type a path / hub id.",
        "请上传文件，或填写路径 / Hub 数据集 id。",
    ),
    "pairs.mapping_not_json": ("The column mapping is not valid JSON: {error}", "列映射不是有效的 JSON：{error}"),
    "pairs.mapping_not_object": (
        'The column mapping must be a JSON object such as {"prompt": "question"}.',
        '列映射必须是 JSON 对象，例如 {"prompt": "question"}。',
    ),
    "pairs.import_failed": ("Nothing was imported.", "未导入任何内容。"),
    "pairs.imported": (
        "**Imported into {collection}** (format {format}).",
        "**已导入到 {collection}**（格式 {format}）。",
    ),
    "pairs.wrote": ("Wrote {file}.", "已写入 {file}。"),
    "pairs.list_separator": ("; ", "；"),
    "pairs.agree_none": ("no labels yet", "还没有标注"),
    "pairs.agree_judged": (
        "{annotators} annotator(s), {pairs} pairs judged ({multi} by two or more)",
        "{annotators} 位标注者，已判断 {pairs} 个偏好对（{multi} 个由两人或以上判断）",
    ),
    "pairs.agree_cohen": (
        "Cohen's κ {kappa} on {shared} shared pairs",
        "Cohen κ {kappa}（{shared} 个共同标注的偏好对）",
    ),
    "pairs.agree_fleiss": ("Fleiss' κ {kappa} on {pairs} pairs", "Fleiss κ {kappa}（{pairs} 个偏好对）"),
    "pairs.agree_source": (
        "agree with the source's order {share} of {decisive} side choices",
        "{decisive} 次选边中有 {share} 与来源的 chosen / rejected 一致",
    ),
    "pairs.agree_first": ("first-shown side picked {share}", "选择先显示一侧的比例 {share}"),
    "pairs.agree_longer": ("longer response picked {share}", "选择较长回答的比例 {share}"),
    "pairs.agree_counts": (
        "ties {ties}, both bad {both_bad}, skips {skips}",
        "一样好 {ties}，都不好 {both_bad}，跳过 {skips}",
    ),
    # Synthesize panel (Pairs tab, admin only).
    "synth.no_job": ("No synthesis job yet.", "还没有合成任务。"),
    "synth.no_strong": ("none (the file's answers only)", "无（只用文件自带的回答）"),
    "synth.heading": (
        "**Synthesis job {job}** · collection {collection} · **{state}**",
        "**合成任务 {job}** · 数据集 {collection} · **{state}**",
    ),
    "synth.prompts_done": ("prompts {done} / {total} ({share})", "提示 {done} / {total}（{share}）"),
    "synth.queued": ("waiting for its devices (another job holds them)", "等待设备（另一个任务正在占用）"),
    "synth.rate": ("{rate} prompts/min", "每分钟 {rate} 个提示"),
    "synth.phase.starting": ("starting…", "正在启动……"),
    "synth.phase.reading prompts": ("reading prompts…", "正在读取提示……"),
    "synth.phase.loading models": ("loading models…", "正在加载模型……"),
    "synth.phase.generating": ("generating…", "正在生成……"),
    "synth.phase.done": ("done…", "已完成……"),
    "synth.added": (
        "pairs added: **{added}** · already in the collection: {duplicates}",
        "新增偏好对：**{added}** · 数据集中已有：{duplicates}",
    ),
    "synth.dropped": ("dropped {n}", "丢弃 {n}"),
    "synth.list_separator": (", ", "，"),
    "synth.filter.empty": ("empty", "空回答"),
    "synth.filter.cut_off": ("cut off", "被截断"),
    "synth.filter.wrong_language": ("wrong language", "语言不符"),
    "synth.filter.near_identical": ("near-identical", "几乎相同"),
    "synth.filter.too_long": ("too long for the context", "超出上下文长度"),
    "synth.summary": (
        "prompts: {prompts} distinct in {rows} rows ({bad_rows} bad, {repeated_rows} repeated); {already_done} done "
        "before, {processed} now, {remaining} left · seed {seed}",
        "提示：{rows} 行中有 {prompts} 个不同的提示（{bad_rows} 行有误，{repeated_rows} 行重复）；之前已完成 "
        "{already_done} 个，本次 {processed} 个，剩余 {remaining} 个 · 随机种子 {seed}",
    ),
    "synth.resume_hint": (
        "Resume continues where it stopped, without duplicating a pair.",
        "“继续”会从停下的地方接着做，不会重复生成偏好对。",
    ),
    "synth.no_job_selected": ("No synthesis job selected.", "没有选中合成任务。"),
    "synth.not_synth_job": (
        "Job {job} is a {kind} job, not a synthesis job.",
        "任务 {job} 是 {kind} 任务，不是合成任务。",
    ),
    "synth.no_prompts": (
        "Upload a prompts file or type a path on the server.",
        "请上传提示文件，或填写服务器上的路径。",
    ),
    "synth.not_started": ("⚠ Nothing started: {error}", "⚠ 未启动：{error}"),
    "synth.started": (
        "Started synthesis job {job} ({state}) into collection {collection}: {checked}.",
        "已启动合成任务 {job}（{state}），写入数据集 {collection}：{checked}。",
    ),
    "synth.preflight": (
        "{prompts} prompts ({with_answer} with an answer of their own",
        "{prompts} 个提示（其中 {with_answer} 个自带回答",
    ),
    "synth.preflight_bad_rows": (", {bad_rows} bad rows skipped", "，跳过 {bad_rows} 个错误行"),
    "synth.preflight_weak": ("); rejected from {weak}", "）；rejected 回答由 {weak} 生成"),
    "synth.preflight_strong": (", missing chosen answers from {strong}", "，缺少的 chosen 回答由 {strong} 生成"),
    "synth.cancelled": (
        "Synthesis job {job}: {state} (it stops after the current batch; its pairs stay).",
        "合成任务 {job}：{state}（当前批次完成后停止；已生成的偏好对保留）。",
    ),
    "synth.resumed": (
        "Resumed as synthesis job {job} ({state}): prompts already handled are skipped.",
        "已作为合成任务 {job} 继续（{state}）：已处理的提示会被跳过。",
    ),
    # Train tab.
    "train.status": ("Status", "状态"),
    "train.confirm_cancel": ("Confirm cancel", "确认取消"),
    "train.score_run": ("Run to score with", "用于打分的运行"),
    "publish.pick_run": ("Pick a run first.", "请先选择一个运行。"),
    "publish.no_model": ("Run {run} has no trained model (final/) yet.", "运行 {run} 还没有训练好的模型（final/）。"),
    "publish.admin_only": ("Publishing needs the admin role.", "发布需要管理员权限。"),
    "publish.saved": ("Card saved to {path}.", "模型卡已保存到 {path}。"),
    "publish.regenerated": ("Card written again from the run.", "已根据运行重新生成模型卡。"),
    "publish.offline": ("the hub is off (offline mode)", "Hub 已关闭（离线模式）"),
    "publish.no_token": ("no token was given", "没有提供令牌"),
    "publish.not_uploaded": (
        "Not uploaded: {why}. These are the exact folders that would be uploaded, in {out}:",
        "未上传：{why}。以下是将要上传的完整文件夹，位于 {out}：",
    ),
    "publish.uploaded": ("Uploaded: {urls}. Files:", "已上传：{urls}。文件："),
    "train.cancel": ("Cancel", "取消"),
    "train.no_job": ("No job yet.", "还没有任务。"),
    "train.no_curves": ("Start a run to see its curves here.", "开始一次运行后，这里会显示它的曲线。"),
    "train.no_job_selected": ("No job selected.", "没有选中任务。"),
    "train.started": ("Started job {job} ({state}) in {run_dir}.", "已启动任务 {job}（{state}），目录 {run_dir}。"),
    "train.cancelled": (
        "Job {job}: {state} (the run saves a checkpoint, then stops).",
        "任务 {job}：{state}（运行会先保存检查点，然后停止）。",
    ),
    "train.resumed": ("Resumed as job {job} ({state}).", "已作为任务 {job} 继续（{state}）。"),
    "train.run_name_placeholder": ("<chosen at start>", "<启动时确定>"),
    "train.score_heading": ("**Job {job}** · {run} · **{state}**", "**任务 {job}** · {run} · **{state}**"),
    "train.score_saved": (
        "Saved: the Pairs tab's “Run for score sort” lists this run for that collection.",
        "已保存：偏好对页的“按得分排序所用的运行”会为该数据集列出此运行。",
    ),
    "train.eval_pick": ("Pick a run, or click one in the job history.", "请选择一个运行，或在任务历史中点击一个。"),
    "train.eval_none": (
        "Run {run} has no evaluation yet (eval.json is written when a run with final_eval finishes; "
        "`python -m ctllm eval` makes one for any two models).",
        "运行 {run} 还没有评估结果（开启 final_eval 的运行结束时会写入 eval.json；"
        "`python -m ctllm eval` 可为任意两个模型生成评估）。",
    ),
    "train.eval_no_chart": ("no evaluation", "暂无评估"),
    "train.eval_chart_missing": ("not in this evaluation", "本次评估中没有"),
    "train.eval_note": ("note: {note}", "注：{note}"),
    "train.not_a_run": ("not a run name: {run}", "不是有效的运行名称：{run}"),
    # A job's progress (Train tab, scoring and synthesis lines).
    "job.heading": ("**Job {job}** · run {run} · **{state}**", "**任务 {job}** · 运行 {run} · **{state}**"),
    "job.step": ("step {step} / {total} ({share})", "第 {step} / {total} 步（{share}）"),
    "job.eta": ("ETA {eta}", "预计剩余 {eta}"),
    "job.elapsed": ("elapsed {elapsed}", "已用时 {elapsed}"),
    "job.preparing": ("preparing…", "准备中……"),
    "job.starting": ("starting…", "正在启动……"),
    "job.preparing_step": ("preparing: step {step} of {steps}, {phase}", "准备中：第 {step} / {steps} 步，{phase}"),
    "job.pairs_per_second": ("{rate} pairs/s", "每秒 {rate} 个偏好对"),
    "job.reference_model": ("reference model: {model}", "参考模型：{model}"),
    "job.final_eval": ("final evaluation {what}", "最终评估：{what}"),
    "job.phase.converting": ("converting the embedded model", "转换内置模型"),
    "job.phase.loading": ("loading models", "加载模型"),
    "job.phase.tokenizing": ("tokenizing", "分词"),
    "job.phase.reference": ("reference pass", "参考模型前向计算"),
    "job.phase.training": ("training", "训练中"),
    "job.phase.evaluating": ("evaluating", "评估中"),
    "job.phase.scoring": ("scoring pairs", "给偏好对打分"),
    "job.state.queued": ("queued", "排队中"),
    "job.state.running": ("running", "运行中"),
    "job.state.cancelling": ("cancelling", "正在取消"),
    "job.state.finished": ("finished", "已完成"),
    "job.state.failed": ("failed", "失败"),
    "job.state.cancelled": ("cancelled", "已取消"),
    "train-eval-table.header.section": ("section", "部分"),
    "train-eval-table.header.group": ("group", "分组"),
    "train-eval-table.header.metric": ("metric", "指标"),
    "train-eval-table.header.note": ("note", "备注"),
    "eval.section.pairs": ("pairs", "偏好对"),
    "eval.section.prompts": ("prompts", "提示列表"),
    "eval.group.all": ("all", "全部"),
    "eval.group.category": ("category", "类别"),
    "eval.group.language": ("language", "语言"),
    "eval.metric.preference_accuracy": ("preference accuracy", "偏好准确率"),
    "eval.metric.implicit_reward_accuracy": ("implicit reward accuracy", "隐式奖励准确率"),
    "eval.metric.implicit_reward_margin": ("implicit reward margin", "隐式奖励差"),
    "eval.metric.reward_of_chosen": ("reward of chosen", "chosen 的奖励"),
    "eval.metric.reward_of_rejected": ("reward of rejected", "rejected 的奖励"),
    "eval.metric.refusal_rate": ("refusal rate", "拒答率"),
    "eval.metric.answer_rate": ("answer rate", "回答率"),
    "eval.headline.preference_accuracy": ("pref. acc.", "偏好准确率"),
    "eval.headline.refusal_rate": ("refusals", "拒答率"),
    "eval.headline.answer_rate": ("answers", "回答率"),
    # Chat tab.
    "chat.same_model": (
        "⚠ Both sides are the same model ({model}): the answers differ only by sampling, and implicit rewards are 0.",
        "⚠ 两侧是同一个模型（{model}）：回答的差别只来自采样，隐式奖励为 0。",
    ),
    "chat.no_run_yet": (
        "No finished training run yet: the right side switches to the newest run as soon as one finishes (Train tab).",
        "还没有完成的训练运行：一旦有运行完成（训练页），右侧会自动切换到最新的运行。",
    ),
    # Leaderboard panel (Chat tab; ctllm/ui/leaderboard_panel.py).
    "chat-leaderboard-box.label": ("Leaderboard: ratings from the votes", "排行榜：根据投票的评分"),
    "chat-leaderboard-language.label": ("Language", "语言"),
    "chat-leaderboard-language.choice.all": ("all", "全部"),
    "chat-leaderboard-language.choice.en": ("English", "英文"),
    "chat-leaderboard-language.choice.zh": ("Chinese", "中文"),
    "chat-leaderboard-language.choice.other": ("other", "其他"),
    "chat-leaderboard-category.label": ("Prompt category", "提示类别"),
    "chat-leaderboard-category.choice.all": ("all", "全部"),
    "chat-leaderboard-blind.label": ("Blind-mode votes only", "仅盲评投票"),
    "chat-leaderboard-rounds.label": ("Bootstrap rounds", "自助法轮数"),
    "chat-leaderboard-refresh.value": ("Refresh", "刷新"),
    "chat-leaderboard-table.label": (
        "Bradley–Terry ratings (FastChat's method; 400 points = 10:1 odds)",
        "布拉德利–特里模型评分（与聊天竞技场排行榜同法；相差 400 分即胜率比 10:1）",
    ),
    "chat-leaderboard-table.header.rank": ("rank", "名次"),
    "chat-leaderboard-table.header.model": ("model", "模型"),
    "chat-leaderboard-table.header.rating": ("rating", "评分"),
    "chat-leaderboard-table.header.95 % CI": ("95 % CI", "95% 置信区间"),
    "chat-leaderboard-table.header.votes": ("votes", "投票数"),
    "chat-leaderboard-table.header.W-L-T": ("W-L-T", "胜-负-平"),
    "chat-leaderboard-chart.label": ("Ratings with 95 % intervals", "评分及 95% 区间"),
    "chat-leaderboard-matrix.label": ("Head-to-head win rates", "两两胜率"),
    "leaderboard.no_votes": (
        "No votes to rate yet: vote in the Chat tab (blind mode for the default view).",
        "还没有可评分的投票：请在对话页投票（默认视图只统计盲评投票）。",
    ),
    "leaderboard.summary": (
        "**{votes} votes** rated, of {total} · 95 % intervals from {rounds} bootstrap rounds",
        "评分依据 **{votes} 票**（共 {total} 票）· 95% 区间来自 {rounds} 轮自助法",
    ),
    "leaderboard.category": ("category {category}", "类别 {category}"),
    "leaderboard.blind_only": (
        "blind-mode votes only (untick the box to count every vote)",
        "仅统计盲评投票（取消勾选以统计全部投票）",
    ),
    "leaderboard.bad_rounds": (
        "Bootstrap rounds must be a whole number from 0 to {max}.",
        "自助法轮数须为 0 到 {max} 的整数。",
    ),
    "leaderboard.chart_title": ("Ratings with bootstrap 95 % intervals", "评分及自助法 95% 区间"),
    "leaderboard.rating_axis": ("rating", "评分"),
    "leaderboard.matrix_title": (
        "Win rate of the row's model against the column's (ties left out)",
        "行模型对列模型的胜率（不计平局）",
    ),
    "leaderboard.matrix_hover": (
        "%{y} beat %{x} in %{text} of %{customdata} decisive votes",
        "%{y} 在 %{customdata} 次分出胜负的投票中胜 %{x} 的比例为 %{text}",
    ),
    "leaderboard.opponent": ("opponent", "对手"),
    "leaderboard.model": ("model", "模型"),
    # Plots (ctllm.ui.plots): titles, axes, legend names, waiting notes, and the evaluation charts' words.
    "plot.loss": ("Loss", "损失"),
    "plot.loss_nll": (
        "Loss: DPO (left) and chosen NLL (right); the logged loss is DPO + α·NLL",
        "损失：DPO（左轴）与 chosen 的 NLL（右轴）；记录的损失为 DPO + α·NLL",
    ),
    "plot.margin": ("Reward margin (chosen − rejected)", "奖励差（chosen − rejected）"),
    "plot.accuracy": ("Reward accuracy", "奖励准确率"),
    "plot.rewards": ("Rewards: chosen and rejected", "奖励：chosen 与 rejected"),
    "plot.step": ("step", "步数"),
    "plot.series.train": ("train", "训练"),
    "plot.series.eval": ("eval", "评估"),
    "plot.series.chosen": ("chosen", "chosen 回答"),
    "plot.series.rejected": ("rejected", "rejected 回答"),
    "plot.series.eval_chosen": ("eval chosen", "评估 chosen 回答"),
    "plot.series.eval_rejected": ("eval rejected", "评估 rejected 回答"),
    "plot.series.dpo": ("DPO", "DPO 损失"),
    "plot.series.eval_dpo": ("eval DPO", "评估 DPO 损失"),
    "plot.series.nll": ("NLL", "NLL 损失"),
    "plot.series.eval_nll": ("eval NLL", "评估 NLL 损失"),
    "plot.waiting": ("Waiting for the first step…", "等待第一步……"),
    "plot.compare": ("Runs compared: {metric}", "运行比较：{metric}"),
    "plot.compare_none": ("Pick runs with logged steps to compare.", "选择已记录步数的运行来比较。"),
    "eval_chart.all": ("all", "全部"),
    "eval_chart.preference.title": (
        "Preference accuracy on held-out pairs (length-normalised log-likelihood)",
        "留出偏好对上的偏好准确率（按长度归一化的对数似然）",
    ),
    "eval_chart.preference.yaxis": ("chosen preferred", "偏好 chosen 的比例"),
    "eval_chart.reward.title": (
        "DPO implicit reward against SFT (β = {beta})",
        "DPO 相对 SFT 的隐式奖励（β = {beta}）",
    ),
    "eval_chart.reward.accuracy": ("implicit reward accuracy", "隐式奖励准确率"),
    "eval_chart.reward.margin": ("mean margin β·Δ", "平均奖励差 β·Δ"),
    "eval_chart.behaviour.title": (
        "Behaviour under greedy decoding: refusals of harmful prompts, answers to benign ones",
        "贪心解码下的行为：对有害提示的拒答，对无害提示的回答",
    ),
    "eval_chart.behaviour.yaxis": ("share of prompts", "提示占比"),
    "eval_chart.behaviour.not_meaningful": (
        "* the model cannot write this language: not meaningful",
        "* 模型不会写这种语言：结果无意义",
    ),
    "eval_chart.refusal_rate": ("refusal rate", "拒答率"),
    "eval_chart.answer_rate": ("answer rate", "回答率"),
    # Chat tab: what its handlers write (model choices, rewards, the tally, notes and errors).
    "chat.model_a": ("Model A", "模型 A"),
    "chat.model_b": ("Model B", "模型 B"),
    "chat.latest_run": ("latest finished run ({name})", "最新完成的运行（{name}）"),
    "chat.metric.preference_accuracy": ("pref. acc.", "偏好准确率"),
    "chat.metric.refusal_rate": ("refusals", "拒答率"),
    "chat.metric.answer_rate": ("answers", "作答率"),
    "chat.reward_after_vote": ("implicit reward: shown after the vote", "隐式奖励：投票后显示"),
    "chat.reward": (
        "implicit reward β·(log π_dpo − log π_sft) = **{reward}** (β = {beta})",
        "隐式奖励 β·(log π_dpo − log π_sft) = **{reward}**（β = {beta}）",
    ),
    "chat.tally": (
        "DPO win rate against SFT: **{rate}** ({dpo} DPO, {sft} SFT, {tie} ties, {both_bad} both bad)",
        "DPO 对 SFT 的胜率：**{rate}**（DPO 胜 {dpo} 次，SFT 胜 {sft} 次，平局 {tie} 次，都不好 {both_bad} 次）",
    ),
    "chat.scoring": ("scoring…", "正在计算隐式奖励…"),
    "chat.vote_saved": ("Saved to the “chat votes” collection.", "已保存到“chat votes”数据集。"),
    "chat.vote_identical": ("Both answers are identical: no pair saved.", "两个回答完全相同：未保存偏好对。"),
    "chat.rate_limit": (
        "Rate limit: {limit} generations a minute; try again in {wait} s.",
        "频率限制：每分钟最多生成 {limit} 次；请 {wait} 秒后再试。",
    ),
    "chat.not_served": (
        "Not allowed: only admins choose other models than those served ({model} is not one).",
        "不允许：只有管理员可以选择未提供的模型（{model} 不在其中）。",
    ),
    "chat.type_first": ("Type a message first.", "请先输入消息。"),
    "chat.pick_models": ("Pick a model for each side.", "请为两侧各选一个模型。"),
    "chat.max_new_range": ("max new tokens must be between 1 and {limit}.", "最大生成长度必须在 1 到 {limit} 之间。"),
    "chat.nothing_to_regenerate": ("Nothing to regenerate yet.", "还没有可重新生成的回答。"),
    "chat.voted_send_new": (
        "This turn has been voted on; send a new message.",
        "这一轮已经投过票；请发送新消息。",
    ),
    "chat.unknown_vote": ("unknown vote {choice}", "未知的投票 {choice}"),
    "chat.send_first": ("Send a message first.", "请先发送一条消息。"),
    "chat.already_voted": ("This turn already has a vote.", "这一轮已经有投票了。"),
    "chat.wait_answers": ("Wait until both answers are finished.", "请等两个回答都生成完毕。"),
}


# Train tab: the Sweep panel (ctllm/ui/sweep_panel.py).
STRINGS.update({
    "train-sweep-box.label": ("Sweep: one run per combination of values", "网格搜索：每种取值组合一个运行"),
    "train-sweep-explain.value": (
        "Each line or space-separated item is `FIELD=V1,V2` (for example `loss_type=sigmoid,ipo beta=0.1,0.5`); "
        "every combination becomes a job queued on the device set, one after another. A single value applies to "
        "every run.",
        "每行或以空格分隔的每一项为 `FIELD=V1,V2`（例如 `loss_type=sigmoid,ipo beta=0.1,0.5`）；每种组合成为一个"
        "在该设备组上排队的任务，依次运行。只给一个值时对所有运行生效。",
    ),
    "train-sweep-name.label": ("Sweep name (empty: sweep-<time>)", "搜索名称（留空则按时间命名）"),
    "train-sweep-preset.label": ("Preset", "预设"),
    "train-sweep-devices.label": ("Device set", "设备组"),
    "train-sweep-grid.label": ("Grid", "网格"),
    "train-sweep-grid.placeholder": ("for example: loss_type=sigmoid,ipo max_steps=50,100",
                                     "例如：loss_type=sigmoid,ipo max_steps=50,100"),
    "train-sweep-start.value": ("Start sweep", "开始搜索"),
    "train-sweep-pick.label": ("Sweep", "搜索"),
    "train-sweep-cancel.value": ("Cancel sweep", "取消搜索"),
    "train-sweep-resume.value": ("Resume sweep", "恢复搜索"),
    "train-sweep-refresh.value": ("Refresh", "刷新"),
    "train-sweep-sort.label": ("Sort by", "排序依据"),
    "train-sweep-desc.label": ("Largest first", "从大到小"),
    "train-sweep-metric.label": ("Curves", "曲线"),
    "sweep.started": ("Sweep **{name}**: {runs} runs queued.", "搜索 **{name}**：已排队 {runs} 个运行。"),
    "sweep.cancelled": ("Sweep **{name}** cancelled: queued runs dropped, running ones stopping.",
                        "搜索 **{name}** 已取消：排队的运行已移除，运行中的正在停止。"),
    "sweep.resumed": ("Sweep **{name}**: unfinished runs queued again.", "搜索 **{name}**：未完成的运行已重新排队。"),
    "sweep.pick": ("Pick a sweep first.", "请先选择一个搜索。"),
})

# Pairs tab: guidelines per collection (ctllm/ui/guidelines_panel.py).
STRINGS.update({
    "pairs-guidelines-box.label": ("Guidelines for this collection", "本数据集的标注指南"),
    "pairs-guidelines-editor.label": (
        "Edit the guidelines (Markdown, admins only)", "编辑指南（支持标记语言格式，仅管理员）"
    ),
    "pairs-guidelines-save.value": ("Save guidelines", "保存指南"),
    "guidelines.none": ("No guidelines for this collection yet.", "本数据集还没有指南。"),
    "guidelines.pick": ("Pick a collection first.", "请先选择一个数据集。"),
    "guidelines.too_long": ("The guidelines have {chars} characters; at most {limit}.",
                            "指南有 {chars} 个字符；最多 {limit} 个。"),
    "guidelines.saved": ("Guidelines of {collection} saved.", "已保存 {collection} 的指南。"),
})

STRINGS["help-text.value"] = (HELP["en"], HELP["zh"])

# Train tab: the loss picker (ctllm/ui/loss_picker.py). Choice labels lead with the loss's set; the English line on
# each loss is ctllm.dpo.loss_fields.PAPERS (its link is added where it is shown).
_LOSS_GROUPS = {"reference": ("Reference", "需参考"), "reference_free": ("Reference-free", "免参考")}
_LOSS_PAPERS_ZH = {
    "sigmoid": "DPO：以策略与参考模型的差值做逻辑斯蒂损失",
    "hinge": "SLiC/RSO：DPO 差值上的铰链损失",
    "ipo": "IPO：逐 token 差值与 1/(2β) 的平方距离",
    "robust": "Robust DPO：在标签翻转率 ε 下无偏",
    "exo_pair": "EXO：到平滑标签分布的反向 KL",
    "nca_pair": "NCA：绝对似然，提高 chosen",
    "bco_pair": "BCO：区分 chosen 与 rejected 奖励的二分类器",
    "sppo_hard": "SPPO，使用硬胜率",
    "aot": "AOT：排序后差值的分布占优",
    "aot_unpaired": "AOT 非成对：排序后的 chosen 奖励对排序后的 rejected 奖励",
    "apo_zero": "apo_zero：提高 chosen，降低 rejected",
    "apo_down": "apo_down：两者都降低，rejected 降得更多",
    "discopop": "DiscoPOP：由 LLM 搜索得到的逻辑斯蒂与指数损失的混合",
    "sft": "chosen 回答的 NLL（可与其他损失相加：RPO、MPO）",
    "sigmoid_norm": "基于逐 token 平均对数比的 DPO",
    "simpo": "SimPO：免参考，长度归一化的奖励，目标间隔 γ",
    "cpo": "CPO：免参考的 DPO 加 chosen 回答的 NLL",
    "orpo": "ORPO：NLL 加 λ × 几率比项，免参考",
    "alphapo": "AlphaPO：奖励形状由 α 决定的 SimPO",
}
for _name in LOSS_TYPES:
    _en, _zh = _LOSS_GROUPS[loss_group(_name)]
    STRINGS[f"train-loss-type.choice.{_name}"] = (f"{_en} · {_name}", f"{_zh} · {_name}")
    STRINGS[f"loss.paper.{_name}"] = (paper_summary(_name), _LOSS_PAPERS_ZH[_name])
STRINGS.update({
    "train-f-divergence-type.label": ("f-divergence", "f 散度"),
    "train-f-divergence-type.info": (
        "f-DPO: the divergence from the reference (reverse_kl is DPO's)",
        "f-DPO：与参考模型之间的散度（reverse_kl 即 DPO 所用）",
    ),
    "train-f-alpha-divergence-coef.label": ("divergence α", "散度 α"),
    "train-f-alpha-divergence-coef.info": (
        "α of alpha_divergence (1: reverse KL)",
        "alpha_divergence 的 α（1 即反向 KL）",
    ),
    "train-discopop-tau.label": ("discopop τ", "DiscoPOP 的 τ"),
    "train-discopop-tau.info": (
        "temperature of the blend of logistic and exponential loss (paper: 0.05)",
        "逻辑斯蒂损失与指数损失混合的温度（论文：0.05）",
    ),
    "train-simpo-gamma.label": ("SimPO γ", "SimPO 的 γ"),
    "train-simpo-gamma.info": (
        "target margin between the chosen and rejected rewards",
        "chosen 与 rejected 奖励之间的目标间隔",
    ),
    "train-cpo-alpha.label": ("cpo alpha", "CPO 的 α"),
    "train-cpo-alpha.info": ("weight of the chosen answer's NLL in CPO", "CPO 中 chosen 回答 NLL 的权重"),
    "train-orpo-lambda.label": ("ORPO λ", "ORPO 的 λ"),
    "train-orpo-lambda.info": ("weight λ of the odds-ratio term (paper: 0.1)", "几率比项的权重 λ（论文：0.1）"),
    "train-alphapo-alpha.label": ("AlphaPO α", "AlphaPO 的 α"),
    "train-alphapo-alpha.info": (
        "shape α of the reward (0 would be SimPO; paper: 0.25)",
        "奖励的形状参数 α（0 即 SimPO；论文：0.25）",
    ),
    "train-loss-weights.label": ("loss weights", "损失权重"),
    "train-loss-weights.info": (
        "one weight per loss, comma-separated (empty: all 1)",
        "每个损失一个权重，用逗号分隔（留空：全为 1）",
    ),
})
ATTRS = ("label", "info", "placeholder", "value")
MAX_SESSIONS = 10_000  # languages remembered, oldest forgotten first

_language: ContextVar[str] = ContextVar("ctllm_ui_language", default="en")
_sessions: dict[str, str] = {}


def t(key: str, lang: str | None = None) -> str:
    """The string for ``key`` in ``lang`` (default: the language of the session being served; English when the
    language or key is unknown)."""
    pair = STRINGS.get(key)
    if pair is None:
        return key
    return pair[1] if (lang or _language.get()) == "zh" else pair[0]


def labelled(elem_id: str, kind: str, values: Iterable[Any], lang: str | None = None) -> list[tuple[str, Any]]:
    """``(label, value)`` of each value, the label from ``"<elem_id>.<kind>.<value>"`` (kind: choice or header)
    where the table has it, else the value itself (data such as collection names stays as it is)."""
    return [
        (t(f"{elem_id}.{kind}.{value}", lang) if f"{elem_id}.{kind}.{value}" in STRINGS else str(value), value)
        for value in values
    ]


def headers(elem_id: str, names: Iterable[str], lang: str | None = None) -> list[str]:
    """A table's column headers in ``lang``."""
    return [label for label, _ in labelled(elem_id, "header", names, lang)]


def remember_language(request: gr.Request | None, lang: str) -> None:
    """The language the session behind ``request`` chose (the language radio's handler records it)."""
    session = getattr(request, "session_hash", None)
    if session:
        _sessions.pop(session, None)
        _sessions[session] = lang if lang in LANGUAGES else "en"
        while len(_sessions) > MAX_SESSIONS:
            del _sessions[next(iter(_sessions))]


def session_language(request: gr.Request | None) -> str:
    return _sessions.get(getattr(request, "session_hash", None) or "", "en")


def use_language(request: gr.Request | None) -> str:
    """Make :func:`t` speak the language of ``request``'s session for the rest of this handler call."""
    lang = session_language(request)
    _language.set(lang)
    return lang


@contextmanager
def speaking(lang: str) -> Iterator[None]:
    token = _language.set(lang)
    try:
        yield
    finally:
        _language.reset(token)


def steps_in(lang: str, steps: Iterator[Any]) -> Iterator[Any]:
    """A streaming handler's steps, each produced in ``lang``: Gradio runs every step of a generator in a fresh
    copy of the context, so a language set by the first step would be gone in the next."""
    while True:
        with speaking(lang):
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
        yield item


def _children(block: Any) -> Iterator[Any]:
    for child in getattr(block, "children", None) or ():
        yield child
        yield from _children(child)


@dataclass
class Translator:
    """The components that show table strings, found by :meth:`localize`."""

    components: list[Any] = field(default_factory=list)

    def localize(self, root: Any) -> None:
        """Walk the blocks under ``root`` (call inside the open Blocks, after everything is built): each component
        whose ``elem_id`` has strings gets its English text now and an update on every language switch."""
        for block in _children(root):
            texts = self.texts(block, "en")
            if texts:
                for attr, value in texts.items():
                    setattr(block, attr, value)
                self.components.append(block)

    @staticmethod
    def texts(block: Any, lang: str) -> dict[str, Any]:
        """What ``block`` shows in ``lang``: its table strings, choice labels when every choice has one, headers."""
        elem_id = getattr(block, "elem_id", None)
        if not elem_id:
            return {}
        texts: dict[str, Any] = {attr: t(f"{elem_id}.{attr}", lang) for attr in ATTRS if f"{elem_id}.{attr}" in STRINGS}
        values = [choice[1] for choice in getattr(block, "choices", None) or ()]
        if values and all(f"{elem_id}.choice.{value}" in STRINGS for value in values):
            texts["choices"] = labelled(elem_id, "choice", values, lang)
        names = getattr(block, "headers", None)
        if names and any(f"{elem_id}.header.{name}" in STRINGS for name in names):
            texts["headers"] = headers(elem_id, names, lang)
        return texts

    def updates(self, lang: str) -> list[Any]:
        return [gr.update(**self.texts(block, lang)) for block in self.components]
