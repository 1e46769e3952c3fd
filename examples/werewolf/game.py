"""A short werewolf game on AgentScope with one trainable player; the other players stay fixed.

Rules (our own, small on purpose):

* Five players, ``Player1`` .. ``Player5``: one werewolf, one seer, three villagers. ``Player1`` is the
  trainee (:data:`TRAINEE`); its role comes from the task, the others' from the task's seed.
* Night: the werewolf names a player to eliminate; the seer names a player and learns, privately, whether
  that player is the werewolf.
* Day: the moderator announces the night's victim; every living player says one sentence, heard by all,
  then votes. The player with the most votes is eliminated (a tie eliminates nobody).
* The village wins when the werewolf is eliminated; the werewolf wins when it is as many as the others,
  or when :data:`MAX_DAYS` days have passed.

Every player is an ordinary AgentScope ``Agent`` with no Agent Lightning code in it: the trainee talks to
the ``llm`` resource (the model being trained), the others to the ``opponents`` resource (a fixed model)
with fixed prompts. Prompts are terse and answers short (a small model on a CPU plays every seat).

Moves never stall the game: a move is the first valid player an answer names (``Player3``); an answer that
names none (or is empty) gets the **default move**, a player drawn from the game's own random generator
(seeded by the task, so a game replays the same), and is counted in :attr:`GameResult.invalid_moves`. A day
speech is cut to its first sentence (at most :data:`SPEECH_CHARS` characters, without any ``[tag]`` the
model copied from the moderator) before the others hear it.

The rollout's reward is the game's outcome for the trainee's side (1.0 win, 0.0 loss). The AgentScope
adapter names every span after its player, so ``agent_match=TRAINEE_MATCH`` keeps only the trainee's
calls as training data, e.g. ``TracerTraceToTriplet(agent_match=TRAINEE_MATCH, reward_match="final")``.

:func:`scripted_moves` plays every seat on the fake OpenAI server (``agentlightning_testing``), so
``Trainer.dev`` can play whole games without a model.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from agentscope.agent import Agent, ContextConfig, InjectionConfig, ModelConfig
from agentscope.credential import OpenAICredential
from agentscope.message import Msg, UserMsg
from agentscope.model import OpenAIChatModel

import agentlightning as agl
from agentlightning.types import NamedResources, ProxyLLM, Rollout

PLAYERS = [f"Player{seat}" for seat in range(1, 6)]
TRAINEE = "Player1"
TRAINEE_MATCH = f"^{TRAINEE}$"
"""``agent_match`` that selects the trainee's LLM calls."""
WEREWOLF, SEER, VILLAGER = "werewolf", "seer", "villager"
ROLES = [WEREWOLF, SEER, VILLAGER, VILLAGER, VILLAGER]
MAX_DAYS = 3
MODERATOR = "Moderator"
SPEECH_CHARS = 120
_NAME = re.compile(r"Player\d")
_TAG_TEXT = re.compile(r"\[[^\]]*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")

RULES = (
    "Werewolf game, players Player1-Player5: 1 werewolf, 1 seer, 3 villagers. Night: the werewolf kills one "
    "player; the seer checks one. Day: each speaks once, then all vote one out. Village wins if the werewolf "
    "is out; the werewolf wins when as many as the rest. Be brief."
)
ROLE_PROMPTS = {
    WEREWOLF: "You are {name}, the werewolf. Hide it; get villagers voted out.",
    SEER: "You are {name}, the seer. Get the werewolf voted out.",
    VILLAGER: "You are {name}, a villager. Find the werewolf and vote it out.",
}


def side_of(role: str) -> str:
    return "werewolf" if role == WEREWOLF else "village"


def deal_roles(seed: int, trainee_role: str) -> Dict[str, str]:
    """Roles for every seat: the trainee gets ``trainee_role``, the rest are shuffled by ``seed``."""
    rest = list(ROLES)
    rest.remove(trainee_role)
    random.Random(seed).shuffle(rest)
    return {TRAINEE: trainee_role, **dict(zip(PLAYERS[1:], rest, strict=True))}


@dataclass
class GameResult:
    winner: str  # "village" or "werewolf"
    roles: Dict[str, str]
    days: int
    eliminated: List[str] = field(default_factory=list)
    moves: Counter[str] = field(default_factory=Counter)  # moves asked per player (night moves and votes)
    invalid_moves: Counter[str] = field(default_factory=Counter)  # of those, default moves (named nobody)
    calls: Counter[str] = field(default_factory=Counter)  # LLM calls (replies) per player
    seconds: float = 0.0  # wall-clock time of the game

    def reward_for(self, player: str) -> float:
        return 1.0 if side_of(self.roles[player]) == self.winner else 0.0


class WerewolfGame:
    """One game: five AgentScope agents and a moderator loop (see the module docstring)."""

    def __init__(
        self, tag: str, roles: Dict[str, str], trainee_llm: agl.LLM, opponents_llm: agl.LLM, seed: int = 0
    ) -> None:
        self.tag = tag  # in every moderator message: which game a prompt belongs to
        self.roles = roles
        self.default_moves = random.Random(f"{tag}-{seed}")  # the moves of answers that name nobody
        self.alive = list(PLAYERS)
        self.result = GameResult(winner="", roles=dict(roles), days=0)
        self.agents = {name: self._player(name, trainee_llm if name == TRAINEE else opponents_llm) for name in PLAYERS}

    def _player(self, name: str, llm: agl.LLM) -> Agent:
        sampling = llm.sampling_parameters
        model = OpenAIChatModel(
            credential=OpenAICredential(api_key=llm.api_key or "unused", base_url=llm.endpoint),
            model=llm.model,
            parameters=OpenAIChatModel.Parameters(
                max_tokens=sampling.get("max_tokens", 24), temperature=sampling.get("temperature", 0.7)
            ),
            stream=False,
            max_retries=0,
        )
        return Agent(
            name=name,
            system_prompt=f"{RULES}\n{ROLE_PROMPTS[self.roles[name]].format(name=name)}",
            model=model,
            model_config=ModelConfig(max_retries=0),
            # A short game: no context compression tool and no time stamps in the context.
            context_config=ContextConfig(compression_tool_enabled=False),
            injection_config=InjectionConfig(inject_runtime_state=False),
        )

    def _say(self, text: str) -> Msg:
        return UserMsg(name=MODERATOR, content=f"[{self.tag}] {text}")

    async def _announce(self, text: str, to: Optional[List[str]] = None) -> None:
        message = self._say(text)
        for name in to if to is not None else self.alive:
            await self.agents[name].observe(message)

    async def _ask(self, name: str, text: str) -> str:
        self.result.calls[name] += 1
        reply = await self.agents[name].reply(self._say(text))
        return reply.get_text_content() or ""

    async def _choose(self, name: str, question: str, candidates: List[str]) -> str:
        self.result.moves[name] += 1
        answer = await self._ask(name, f"{question} Choose one of: {', '.join(candidates)}. Answer with the name only.")
        named = [match for match in _NAME.findall(answer) if match in candidates]
        if named:
            return named[0]
        self.result.invalid_moves[name] += 1
        return self.default_moves.choice(candidates)

    async def _speak(self, name: str, day: int) -> str:
        said = _TAG_TEXT.sub("", await self._ask(name, f"Day {day}. In one short sentence: whom do you suspect?"))
        sentence = _SENTENCE_END.split(" ".join(said.split()), 1)[0]
        return sentence[:SPEECH_CHARS] or "(nothing)"

    def _winner(self) -> Optional[str]:
        wolves = [name for name in self.alive if self.roles[name] == WEREWOLF]
        if not wolves:
            return "village"
        if len(wolves) >= len(self.alive) - len(wolves):
            return "werewolf"
        return None

    def _eliminate(self, name: str) -> None:
        self.alive.remove(name)
        self.result.eliminated.append(name)

    async def play(self) -> GameResult:
        started = time.perf_counter()
        wolf = next(name for name, role in self.roles.items() if role == WEREWOLF)
        seer = next(name for name, role in self.roles.items() if role == SEER)
        winner: Optional[str] = None
        for day in range(1, MAX_DAYS + 1):
            self.result.days = day
            # Night: the werewolf's victim and the seer's look.
            victim = await self._choose(
                wolf, f"Night {day}. Whom do you eliminate?", [p for p in self.alive if p != wolf]
            )
            if seer in self.alive:
                looked = await self._choose(
                    seer, f"Night {day}. Whose role do you look at?", [p for p in self.alive if p != seer]
                )
                verdict = "is the werewolf" if looked == wolf else "is not the werewolf"
                await self._announce(f"Night {day}: {looked} {verdict}.", to=[seer])
            self._eliminate(victim)
            await self._announce(f"Day {day}: {victim} was eliminated in the night.")
            if (winner := self._winner()) is not None:
                break
            # Day: one sentence each, heard by everyone, then the vote.
            for name in list(self.alive):
                said = await self._speak(name, day)
                await self._announce(f"{name} says: {said}", to=[p for p in self.alive if p != name])
            votes = Counter(
                [
                    await self._choose(
                        name, f"Day {day} vote. Whom do you vote out?", [p for p in self.alive if p != name]
                    )
                    for name in list(self.alive)
                ]
            )
            (top, count), *others = votes.most_common()
            if not others or others[0][1] < count:
                self._eliminate(top)
                await self._announce(f"Day {day}: {top} was voted out; {top} was a {self.roles[top]}.")
            else:
                await self._announce(f"Day {day}: the vote is tied; nobody is voted out.")
            if (winner := self._winner()) is not None:
                break
        self.result.winner = winner or "werewolf"
        self.result.seconds = time.perf_counter() - started
        return self.result


class WerewolfAgent(agl.LitAgent[Dict[str, Any]]):
    """The rollout: one game; the reward is its outcome for the trainee's side.

    Task: ``{"game": "g7", "seed": 7, "trainee_role": "villager"}``. Resources: ``llm`` (the trainee's
    model, trained) and ``opponents`` (the other players' model, fixed).
    """

    def __init__(self, on_game_over: Optional[Callable[[str, GameResult], None]] = None) -> None:
        super().__init__()
        self.results: Dict[str, GameResult] = {}  # by game tag, for reports
        self.on_game_over = on_game_over

    async def rollout_async(self, task: Dict[str, Any], resources: NamedResources, rollout: Rollout) -> float:
        trainee_llm, opponents_llm = resources["llm"], resources.get("opponents", resources["llm"])
        if isinstance(trainee_llm, ProxyLLM):  # through the LLM proxy: the trainee's calls carry token ids
            trainee_llm = trainee_llm.with_attempted_rollout(rollout)
        assert isinstance(trainee_llm, agl.LLM) and isinstance(opponents_llm, agl.LLM)
        seed = int(task["seed"])
        roles = deal_roles(seed, task["trainee_role"])
        result = await WerewolfGame(task["game"], roles, trainee_llm, opponents_llm, seed).play()
        self.results[task["game"]] = result
        if self.on_game_over is not None:
            self.on_game_over(task["game"], result)
        return result.reward_for(TRAINEE)


def make_tasks(count: int, seed: int = 0) -> List[Dict[str, Any]]:
    """``count`` games, the trainee's role cycling werewolf, seer, villager, villager."""
    cycle = [WEREWOLF, SEER, VILLAGER, VILLAGER]
    return [
        {"game": f"g{seed + index}", "seed": seed + index, "trainee_role": cycle[index % len(cycle)]}
        for index in range(count)
    ]


# -- scripted players for the fake OpenAI server ------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content or "")


def scripted_moves(body: Mapping[str, Any]) -> Optional[Any]:
    """The fake server's policy: a move for the moderator's last question, from the game tag and the question.

    Each move is the first of the offered players in a ranking drawn from the question (which holds the game
    tag and the phase). The villagers and the seer share one ranking per day, so they vote for the same
    suspect, who is the werewolf in some games and not in others; night moves and the werewolf's vote use
    the player's own ranking. Returns a ``FakeReply``, or None for requests that are not moves.
    """
    from agentlightning_testing.fake_openai import FakeReply

    messages = body.get("messages") or []
    question = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
    if "Choose one of:" in question:
        candidates = _NAME.findall(question.split("Choose one of:", 1)[1])
        phase = question.split(".", 1)[0]  # "[g3] Night 1", "[g3] Day 2 vote"
        # Night moves and the werewolf's vote follow the player's own ranking; the village shares one per day.
        own = ", the werewolf." in system or "vote" not in phase
        key = f"{phase}{system[-80:]}" if own else phase

        def rank(player: str) -> str:
            return hashlib.sha256(f"{key}{player}".encode()).hexdigest()

        return FakeReply.text(min(candidates, key=rank))
    if "In one short sentence" in question:
        return FakeReply.text("I am not sure yet; let us listen to everyone before we vote.")
    return None
