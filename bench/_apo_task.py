"""The APO benchmark's task and agent, shared by every system (each imports it in its own environment).

The meeting-room task of examples/apo (``room_tasks``: seeded requests, one right room, the exact
reward), played by a one-call agent: the day's listing is given in the request instead of through a
``list_rooms`` tool call, because the 0.5B embedded model does not call the tool reliably (it
invents tools), and a benchmark that scores 0 for every prompt cannot rank optimizers. The agent has
two prompt templates, ``system_prompt`` and ``request_prompt`` (placeholder ``{request}``).

Only the standard library and ``openai`` (1.x or 2.x+) are needed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "apo"))
from room_tasks import make_tasks, parse_answer, reward  # noqa: E402

__all__ = ["SEED_PROMPTS", "AGENT_MAX_TOKENS", "datasets", "messages_for", "score_reply"]

# A weak start: the answer's form but none of the rules. With it the 0.5B model answers R1 to every request
# (0.17-0.42 on the three seeds' validation sets); "You are a helpful assistant." scores 0 (it explains
# instead of answering within AGENT_MAX_TOKENS), which leaves an optimizer nothing to compare.
SEED_PROMPTS: Dict[str, str] = {
    "system_prompt": "You book meeting rooms. Reply with the room id only.",
    "request_prompt": "{request}",
}
# Enough for "Room: R3" and a few words; a long explanation is cut off before its answer (scored 0).
AGENT_MAX_TOKENS = 24


def datasets(seed: int, n_train: int, n_val: int, rooms: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The training and validation requests of a seed (disjoint draws)."""
    return make_tasks(n_train, 1000 * seed + 1, rooms), make_tasks(n_val, 1000 * seed + 2, rooms)


def render_rooms(task: Mapping[str, Any]) -> str:
    lines = []
    for room in task["rooms"]:
        equipment = [name for name in ("projector", "whiteboard") if room[name]] or ["no equipment"]
        booked = ", ".join(f"{hour}:00" for hour in room["booked"])
        lines.append(f"{room['id']}: seats {room['capacity']}, {' and '.join(equipment)}, booked at {booked}")
    return "\n".join(lines)


def messages_for(prompts: Mapping[str, str], task: Mapping[str, Any]) -> List[Dict[str, str]]:
    """The agent's one request: the system prompt, then the request prompt and today's rooms."""
    request = prompts["request_prompt"].format(request=task["request"])
    return [
        {"role": "system", "content": prompts["system_prompt"].format()},
        {"role": "user", "content": f"{request}\n\nToday's rooms:\n{render_rooms(task)}"},
    ]


def score_reply(task: Mapping[str, Any], text: Optional[str]) -> float:
    return reward(dict(task), parse_answer(text or ""))
