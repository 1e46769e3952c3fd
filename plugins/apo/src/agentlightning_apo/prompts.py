"""The optimizer's instructions (critique, edit, one-call and append templates) and the checks on what it answers.

The instructions are plain ``str.format`` templates a user can replace (``APO(critique_template=...,
edit_template=..., one_call_template=..., append_template=...)``); they are checked for the fields they
must use when the algorithm is built.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "APPEND_FIELDS",
    "CRITIQUE_FIELDS",
    "DEFAULT_APPEND_TEMPLATE",
    "DEFAULT_CRITIQUE_TEMPLATE",
    "DEFAULT_EDIT_TEMPLATE",
    "DEFAULT_ONE_CALL_TEMPLATE",
    "EDIT_FIELDS",
    "ONE_CALL_FIELDS",
    "EditRejected",
    "Experiment",
    "added_instructions",
    "appended_template",
    "check_instruction_template",
    "check_edited_prompt",
    "placeholders",
    "rewritten_templates",
    "render_experiments",
    "render_prompts",
]

DEFAULT_CRITIQUE_TEMPLATE = """You improve the prompts of an AI agent. The agent uses these prompt templates \
(placeholders in curly braces are filled in for each task):

{prompts}

Below are runs of the agent with these prompts: the conversation of each run and the reward it got \
(1.0 is a perfect answer, 0.0 a wrong one).

{experiments}

Study the runs that got a low reward. Say what the agent did wrong and why the prompts led it there. \
Then list at most 4 concrete changes to the template(s) {targets} that would make the agent get a high \
reward. Be specific: name the rule or step the prompt should add or change. Do not rewrite the whole prompt."""

DEFAULT_EDIT_TEMPLATE = """Here is the prompt template "{name}" of an AI agent:

<prompt>
{prompt}
</prompt>

A reviewer suggested these changes:

{critique}

Rewrite the template to apply the changes. Keep what the changes do not ask to change, above all the \
form of the answer the template asks for, and every placeholder exactly as written ({placeholders}). Keep it \
short. Answer with the new template only, between <prompt> and </prompt>."""

# The start shared by the one-call and append instructions: the templates, the runs, the critique asked for.
_SINGLE_CALL_START = """You improve the prompt templates of an AI agent. These are its templates now \
(placeholders in curly braces are filled in for each task):

{prompts}

Below are runs of the agent with these templates: the conversation of each run and the reward it got \
(1.0 is the best answer, 0.0 a wrong one, a reward in between a partly right one).

{experiments}

First, in at most three sentences, say what the agent did wrong in the runs with a low reward and what \
general rule would have led it to the best answer; do not repeat the runs. """

DEFAULT_ONE_CALL_TEMPLATE = (
    _SINGLE_CALL_START
    + """Then write the improved \
template(s) {targets}: add that rule, keep what works (above all the form of the answer the template asks \
for) and every placeholder exactly as written. Keep each template short. Write each one between \
<prompt name="NAME"> and </prompt>, NAME being the template's name."""
)

DEFAULT_APPEND_TEMPLATE = (
    _SINGLE_CALL_START
    + """Then write that rule as one or \
two short instructions to add at the end of the template(s) {targets}. Write only the new instructions, \
not the template, between <add name="NAME"> and </add>, NAME being the template's name."""
)

CRITIQUE_FIELDS = ("prompts", "experiments", "targets")
EDIT_FIELDS = ("name", "prompt", "critique", "placeholders")
ONE_CALL_FIELDS = CRITIQUE_FIELDS
APPEND_FIELDS = CRITIQUE_FIELDS

_REFUSALS = ("i'm sorry", "i am sorry", "i cannot", "i can't", "as an ai")
_PROMPT_TAGS = re.compile(r"<prompt>\s*(.*?)\s*(?:</prompt>|$)", re.DOTALL | re.IGNORECASE)
# The tags of a one-call reply's blocks (<prompt name="X">, and the <template name="X"> small models write
# instead) and of an append reply's (<add name="X">, or a <rule>, or a rewrite's tags).
_REWRITE_TAGS = ("prompt", "template")
_ADD_TAGS = ("add", "rule", *_REWRITE_TAGS)
_FENCE = re.compile(r"^```[\w-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class EditRejected(ValueError):
    """An optimizer reply that cannot become a prompt; ``reason`` says why (logged and kept with the run)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Experiment:
    """One training rollout shown to the optimizer: the task, the agent's messages and the reward."""

    task: Any
    messages: List[Dict[str, Any]]
    reward: Optional[float]


def placeholders(template: str) -> List[str]:
    """The field names of an f-string template, in order of first use; ``ValueError`` if it does not parse."""
    names: List[str] = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in names:
            names.append(field)
    return names


def check_instruction_template(template: str, required: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming what is wrong with a user's critique/edit instruction template."""
    try:
        fields = placeholders(template)
    except ValueError as exc:
        raise ValueError(f"the {what} template is not a valid str.format template: {exc}") from None
    missing = [name for name in required if name not in fields]
    unknown = [name for name in fields if name not in required]
    if missing:
        raise ValueError(f"the {what} template must use the fields {missing} (it may use {list(required)})")
    if unknown:
        raise ValueError(f"the {what} template uses unknown fields {unknown}; known: {list(required)}")


def render_prompts(prompts: Mapping[str, str]) -> str:
    return "\n\n".join(f'Template "{name}":\n<prompt>\n{text}\n</prompt>' for name, text in prompts.items())


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    text = str(content) if content else ""
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call.get("function", {}) if isinstance(call, Mapping) else {}
        text += f"\n[calls tool {function.get('name')}({function.get('arguments')})]"
    return text.strip()


def render_experiments(experiments: Sequence[Experiment], *, max_chars_per_run: int = 1500) -> str:
    """The runs as the critique sees them: the last LLM call's conversation of each (the task itself when
    there is none: the conversation already carries it, and a model reading both copies the raw task), and
    its reward."""
    blocks: List[str] = []
    for index, experiment in enumerate(experiments, 1):
        reward = "failed (no reward)" if experiment.reward is None else f"{experiment.reward:.2f}"
        lines = [f"### Run {index}: reward {reward}"]
        if not experiment.messages:
            lines.append(f"Task: {json.dumps(experiment.task, default=str)[:300]}")
        for message in experiment.messages:
            lines.append(f"{message.get('role', '?')}: {_message_text(message)}")
        text = "\n".join(lines)
        if len(text) > max_chars_per_run:
            text = text[: max_chars_per_run // 2] + "\n[...]\n" + text[-max_chars_per_run // 2 :]
        blocks.append(text)
    return "\n\n".join(blocks) if blocks else "(no runs finished)"


def _named_blocks(
    reply: str, targets: Sequence[str], tags: Sequence[str], current: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """The text of each target's block in a reply: ``<TAG name="NAME">...</TAG>``, ``<NAME>...</NAME>``, or
    an unnamed ``<TAG>`` block after a heading that names one target ("### System prompt").

    Of several blocks for a target, the last one that differs from its ``current`` text wins: a reply often
    quotes the current template before or after its rewrite. Unnamed blocks left over fill the targets
    without a block, in order, when there are as many of each; with one target, the last block is taken
    whatever its name. A target without a block is left out.
    """
    tag = "(?:" + "|".join(tags) + ")"
    named = re.compile(
        rf"<{tag}(?:\s+name\s*=\s*[\"']?([^\"'>]*?)[\"']?)?\s*>\s*(.*?)\s*(?:</{tag}>|(?=<{tag}[\s>])|$)",
        re.DOTALL | re.IGNORECASE,
    )
    located = [(m.start(), m.end(), (m.group(1) or "").strip(), m.group(2)) for m in named.finditer(reply)]
    for target in targets:  # <system_prompt>...</system_prompt>: the name as the tag, closed by any tag
        name = re.escape(target)
        located += [
            (m.start(), m.end(), target, m.group(1))
            for m in re.finditer(rf"<{name}>\s*(.*?)\s*(?:</[^>]*>|$)", reply, re.DOTALL)
        ]
    located.sort()
    spoken = {target: re.sub(r"[\s_-]+", " ", target).lower() for target in targets}
    blocks: List[Tuple[str, str]] = []
    unnamed: List[str] = []
    previous_end = 0
    for begin, finish, name, text in located:
        if not name:
            heading = re.sub(r"[\s_-]+", " ", reply[previous_end:begin][-120:]).lower()
            named_here = [t for t, words in spoken.items() if words in heading]
            if len(named_here) == 1:
                name = named_here[0]
            else:
                unnamed.append(text)
        blocks.append((name, text))
        previous_end = max(previous_end, finish)
    by_target: Dict[str, List[str]] = {t: [text for name, text in blocks if name == t] for t in targets}
    missing = [t for t in targets if not by_target[t]]
    if len(targets) == 1 and missing and blocks:
        by_target[targets[0]] = [blocks[-1][1]]
    elif missing and len(unnamed) == len(missing):
        for target, text in zip(missing, unnamed, strict=True):
            by_target[target] = [text]
    found: Dict[str, str] = {}
    for target, texts in by_target.items():
        if texts:
            was = (current or {}).get(target, "").strip()
            changed = [text for text in texts if text.strip() != was]
            found[target] = (changed or texts)[-1]
    return found


def rewritten_templates(
    reply: str, targets: Sequence[str], current: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """The new text of each target template in a one-call reply (``<prompt name="NAME">...</prompt>``)."""
    return _named_blocks(reply, targets, _REWRITE_TAGS, current)


def added_instructions(reply: str, targets: Sequence[str]) -> Dict[str, str]:
    """The instructions to add to each target template in an append reply (``<add name="NAME">...</add>``)."""
    return _named_blocks(reply, targets, _ADD_TAGS)


def appended_template(addition: str, original: str, *, max_chars: int) -> str:
    """``original`` with the optimizer's ``addition`` at its end, or :class:`EditRejected` with the reason.

    An addition that repeats the whole template first (small models often do) counts from after it.
    The result passes :func:`check_edited_prompt`: the original's placeholders are kept by construction,
    one the addition invents is kept as text.
    """
    text = addition.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    base = original.rstrip()
    if base.strip() and text.startswith(base.strip()):
        text = text[len(base.strip()) :].strip()
    if not text:
        raise EditRejected("nothing to add")
    if text.lower().startswith(_REFUSALS) or not re.search(r"[A-Za-z]{2,}", text):
        raise EditRejected(f"not an instruction: {text[:80]!r}")
    if text in base:
        raise EditRejected("not an edit: the template already says it")
    separator = "\n" if "\n" in base else " "
    return check_edited_prompt(f"{base}{separator}{text}", original, max_chars=max_chars)


def check_edited_prompt(reply: str, original: str, *, max_chars: int) -> str:
    """The new template in an optimizer ``reply``, or :class:`EditRejected` with the reason.

    Rejected: an empty reply, one that is not a prompt (a refusal, no words, braces that do not
    parse as an f-string template, the original unchanged), one over ``max_chars``, and one that
    drops placeholders. A placeholder the original does not have (the agent would not fill it) is
    kept as literal text: ``{needs}`` becomes ``{{needs}}``.
    """
    text = reply.strip()
    tagged = _PROMPT_TAGS.search(text)
    if tagged:
        text = tagged.group(1).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        raise EditRejected("empty reply")
    if text.lower().startswith(_REFUSALS) or not re.search(r"[A-Za-z]{2,}", text):
        raise EditRejected(f"not a prompt: {text[:80]!r}")
    if len(text) > max_chars:
        raise EditRejected(f"over-long: {len(text)} characters > {max_chars}")
    try:
        fields = placeholders(text)
    except ValueError as exc:
        raise EditRejected(f"not a prompt: its braces do not parse as a template ({exc})") from None
    wanted = placeholders(original)
    dropped = [name for name in wanted if name not in fields]
    if dropped:
        raise EditRejected(f"drops placeholders {['{' + n + '}' for n in dropped]}")
    if any(name not in wanted for name in fields):
        # Small optimizers often write a placeholder of their own ("{needs}"): keep the rewrite, that field as text.
        text = _literal_unless(text, wanted)
    if text == original.strip():
        raise EditRejected("not an edit: the prompt is unchanged")
    return text


def _literal_unless(template: str, fields: Sequence[str]) -> str:
    """``template`` with every replacement field not in ``fields`` escaped, so that it renders as written."""
    out: List[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        body = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        out.append("{" + body + "}" if field in fields else "{{" + body + "}}")
    return "".join(out)
