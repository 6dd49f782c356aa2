"""The short help panel, in English and Chinese."""

from __future__ import annotations

HELP = {
    "en": """
### The loop
1. **Pairs**: pick a collection, read the prompt and the two responses, and vote (the sides are shown in a
   random order per annotator, so position bias averages out). Edit a response (a new version; the original
   is kept), add pairs by hand, import files or hub datasets, export for training elsewhere.
2. **Train**: choose the SFT model, the pairs and a preset; adjust β, loss and the rest; start. The job runs in
   its own process: closing the browser does not stop it, and reopening the app shows it live.
3. **Chat**: the SFT model (left) and the DPO model (right) answer the same message at once. Vote, and the
   two answers become a new pair in the “chat votes” collection, ready for the next run.

### Keys in the Pairs tab
`1` first better · `2` second better · `3` tie · `4` both bad · `s` skip · `←` `→` previous / next · `u` undo.
They do nothing while you type in a text box.

### Reading the training plots
Loss starts at ln 2 ≈ 0.693. The *margin* (chosen reward − rejected reward) and the *accuracy* (share of pairs
whose chosen response earns the higher reward) are what should grow. Both rewards often drift below zero while
the margin grows: that is expected, since only the gap is trained.

### Roles
Viewers read; annotators label, edit, add, chat and vote; admins also import, export, train and change models.
On your own machine (localhost, no login) you have every right.

### Models
The embedded SmolLM2-135M-Instruct answers English only. For Chinese use the CT-LLM presets
(`ct-llm-sft`, `ct-llm-sft-dpo`), downloaded from the hub when first used.
""",
    "zh": """
### 工作流程
1. **偏好对**：选择数据集，阅读提示和两个回答并投票（两个回答的左右顺序对每位标注者随机，以抵消位置偏差）。
   可以编辑回答（另存为新版本，保留原版）、手动添加偏好对、导入文件或 Hub 数据集、导出用于其他训练。
2. **训练**：选择 SFT 模型、偏好数据和预设，调整 β、损失函数等参数后开始。任务在独立进程中运行：
   关闭浏览器不会中断，重新打开应用即可继续实时查看。
3. **对话**：SFT 模型（左）与 DPO 模型（右）同时回答同一条消息。投票后，两个回答会作为新的偏好对
   存入“chat votes”数据集，供下一次训练使用。

### 偏好对页面的快捷键
`1` 回答 1 更好 · `2` 回答 2 更好 · `3` 一样好 · `4` 都不好 · `s` 跳过 · `←` `→` 上一个 / 下一个 · `u` 撤销。
在输入框中输入时不起作用。

### 如何看训练曲线
损失从 ln 2 ≈ 0.693 开始。应当增长的是*奖励差*（chosen 奖励 − rejected 奖励）和*准确率*（chosen 奖励更高的
偏好对所占比例）。两个奖励常常一起降到零以下而奖励差仍在增大：这是正常的，训练只拉开两者的差距。

### 角色
查看者只读；标注者可以标注、编辑、添加、对话和投票；管理员还可以导入、导出、训练和更换模型。
在本机（localhost、未配置登录）运行时拥有全部权限。

### 模型
内置的 SmolLM2-135M-Instruct 只能用英文回答。中文请使用 CT-LLM 预设（`ct-llm-sft`、`ct-llm-sft-dpo`），
首次使用时从 Hub 下载。
""",
}
