"""The meeting-room task of the APO example: seeded requests, the one right room, an exact reward.

Plain Python (no Agent Lightning, no model library), so the benchmark's peers import it in their own
environments and every system is scored by the same code.
"""

from __future__ import annotations

import random
import re
from typing import Any, Dict, List, Optional


def make_tasks(count: int, seed: int, rooms_per_task: int = 6) -> List[Dict[str, Any]]:
    """Requests with one right room each among ``rooms_per_task`` rooms, drawn from ``seed``."""
    rng = random.Random(seed)
    tasks: List[Dict[str, Any]] = []
    while len(tasks) < count:
        rooms = []
        for index in range(1, rooms_per_task + 1):
            rooms.append(
                {
                    "id": f"R{index}",
                    "capacity": rng.choice([2, 4, 6, 8, 10, 12, 16]),
                    "projector": rng.random() < 0.5,
                    "whiteboard": rng.random() < 0.5,
                    "booked": sorted(rng.sample(range(9, 18), rng.randint(1, 4))),
                }
            )
        people, hour = rng.randint(2, 12), rng.randint(9, 17)
        needs = [n for n in ("projector", "whiteboard") if rng.random() < 0.4]
        task = {"people": people, "hour": hour, "needs": needs, "rooms": rooms}
        if best_room(task) is None:
            continue
        equipment = f" with a {' and a '.join(needs)}" if needs else ""
        task["request"] = f"Book a meeting room for {people} people at {hour}:00{equipment}."
        tasks.append(task)
    return tasks


def fits(task: Dict[str, Any], room: Dict[str, Any]) -> bool:
    return (
        room["capacity"] >= task["people"]
        and task["hour"] not in room["booked"]
        and all(room[need] for need in task["needs"])
    )


def best_room(task: Dict[str, Any]) -> Optional[str]:
    fitting = [r for r in task["rooms"] if fits(task, r)]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (r["capacity"], int(r["id"][1:])))["id"]


def reward(task: Dict[str, Any], answer: Optional[str]) -> float:
    if answer == best_room(task):
        return 1.0
    room = next((r for r in task["rooms"] if r["id"] == answer), None)
    return 0.5 if room is not None and fits(task, room) else 0.0


def parse_answer(text: str) -> Optional[str]:
    found = re.findall(r"\bR(\d+)\b", text or "")
    return f"R{found[-1]}" if found else None
