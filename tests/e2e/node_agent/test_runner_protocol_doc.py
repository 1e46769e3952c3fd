"""docs/runner-protocol.md runs as written: its bash blocks, in order in one shell, against a real
`agl store serve` and `agl proxy`; every `HTTP <status>` line its output blocks show is what came back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Iterator, List, Tuple

import pytest
from node_helpers import ROOT, Process, start_store_and_proxy

from agentlightning_testing.fake_openai import FakeOpenAIServer

DOC = ROOT / "docs" / "runner-protocol.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
MARKER = "@@ end of block {} @@"


def _blocks() -> List[Tuple[str, List[str]]]:
    """Each bash block with the `HTTP nnn` lines of the output block that follows it."""
    fences = [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text())]
    blocks: List[Tuple[str, List[str]]] = []
    for index, (language, body) in enumerate(fences):
        if language != "bash":
            continue
        following = fences[index + 1] if index + 1 < len(fences) else ("", "")
        shown = following[1] if following[0] in ("text", "json") else ""
        blocks.append((body, re.findall(r"^HTTP \d{3}$", shown, re.M)))
    return blocks


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, str]]:
    folder = tmp_path_factory.mktemp("protocol_doc")
    processes: List[Process] = []
    with FakeOpenAIServer() as fake:
        try:
            yield start_store_and_proxy(processes, fake, f"sqlite:///{folder / 'store.db'}")
        finally:
            for process in reversed(processes):
                process.stop()


def test_every_command_of_the_protocol_document_runs(servers: Tuple[str, str]) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"the protocol document's commands need {', '.join(missing)} (the node_agent session installs them)"
        )
    blocks = _blocks()
    assert len(blocks) >= 10, "the document lost its commands"
    script = ["set -euo pipefail"]
    for index, (body, _) in enumerate(blocks):
        script += [body, f"printf '\\n{MARKER.format(index)}\\n'"]  # on a line of its own
    store_url, proxy_url = servers
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STORE": store_url, "PROXY": proxy_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    outputs = re.split(r"^@@ end of block \d+ @@\n", done.stdout, flags=re.M)
    assert len(outputs) == len(blocks) + 1
    for (body, statuses), output in zip(blocks, outputs[:-1], strict=True):
        got = re.findall(r"^HTTP \d{3}$", output, re.M)
        assert got == statuses, f"block:\n{body}\noutput:\n{output}"
    assert any(statuses for _, statuses in blocks)  # the error examples are checked, not only the happy path
