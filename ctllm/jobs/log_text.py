"""A job's log tail made readable: progress-bar fragments glued to the front of log lines are cut off.

tqdm redraws its bar with '\\r' and no newline; a log line written to the same stream (stderr) in between lands
right after the bar's last drawing, on the same line. ``tail_lines`` keeps what follows the last '\\r' of a line,
which is then "DPO:  10%|█ | 2/20 [00:01<00:09, 2.0step/s]2024-05-01 12:00:00 INFO step 2 ...". This keeps the log
line alone; a bar on a line of its own (its latest state) stays.
"""

from __future__ import annotations

import re

# tqdm's default layout: "{desc}: {percentage}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]"
# (the bar part may be left out by a format without it).
_BAR = re.compile(r"^[^\n|]*?\d+%\|[^|\n]*\|\s*[^\[\n]*\[[^\]\n]*\]")


def readable_log(text: str) -> str:
    """``text`` (lines already reduced to their last '\\r' segment) with bar fragments cut from mixed lines."""
    lines = []
    for line in text.split("\n"):
        match = _BAR.match(line)
        rest = line[match.end() :] if match else ""
        lines.append(rest if rest.strip() else line)
    return "\n".join(lines)
