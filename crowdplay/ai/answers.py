"""A policy's answer: an action, or the reason there is none.

Where a policy gives no usable action (it raised, answered something that is not an action of
the agent's space, its actor is down or not placed, or it has not answered yet) the game plays a
substitute, and the recording stores the reason with it: a substitute is never recorded as the
policy's answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: An action, or why the policy gave none.
Answer = int | str
#: Longest reason kept (it is stored with every answer it stands in for).
MAX_REASON = 200
#: Why an agent plays a substitute before its policy has answered once (after a reset too).
NO_ANSWER_YET = "no answer yet"


def one_line(error: BaseException) -> str:
    """An exception as "Type: message" on one line (for reasons, consoles and reports)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def failure_reason(error: BaseException) -> str:
    """A failure in one line, short enough for every recorded answer it replaces."""
    return f"policy raised {one_line(error)}"[:MAX_REASON]


def checked_action(answer: Any, action_count: int) -> Answer:
    """``answer`` as an action in 0..action_count-1, or the reason it is not one."""
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, np.integer)):
        if isinstance(answer, (float, np.floating)) and float(answer).is_integer():
            answer = int(answer)
        else:
            return f"policy answered {answer!r}, not an action"[:MAX_REASON]
    if not 0 <= int(answer) < action_count:
        return f"policy answered {int(answer)}, outside 0..{action_count - 1}"
    return int(answer)

