"""A CPU stand-in for verl's GPU worker group, for the CUDA part only.

verl's FSDP actor and its vLLM rollout replicas need CUDA. The stand-in keeps their contract
(:class:`agentlightning_verl.PolicyWorkers`) with a byte-level bigram policy small enough for a CPU:

- the actor computes log-probs with verl's ``logprobs_from_logits`` and updates with verl's own policy
  loss (``get_policy_loss_fn(actor.policy_loss.loss_mode)``), KL loss (``kl_penalty``) and ``agg_loss``,
  configured by the run's verl actor config (clip ratios, loss aggregation, lr, epochs, mini-batches);
- the "rollout server" is a real HTTP server with an OpenAI ``/v1/completions`` endpoint that samples
  from the weights last synced to it and returns vLLM's token ids and logprobs, so what it serves
  after ``sync_weights`` is the new policy, checkable through the logprobs it reports.

Token ids are bytes; sampling is limited to printable ASCII so the agent's text round-trips.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import uuid
from typing import Any, Dict, List, Optional

import torch
from aiohttp import web
from omegaconf import DictConfig
from verl import DataProto
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.torch_functional import logprobs_from_logits

VOCAB = 128
PAD = 0
# Logit offset of ids the policy may not sample (control characters): ~0 probability, finite gradients.
_BLOCKED = torch.tensor([0.0 if 32 <= i <= 126 else -1e4 for i in range(VOCAB)])


class BigramPolicy(torch.nn.Module):
    """Next-byte logits from the previous byte: a [VOCAB, VOCAB] table."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(VOCAB, VOCAB, generator=generator) * 0.5)

    def forward(self, previous: torch.Tensor) -> torch.Tensor:
        return self.table[previous.clamp(0, VOCAB - 1)] + _BLOCKED

    def response_log_probs(self, batch: DataProto) -> torch.Tensor:
        """Log-probs ``[B, R]`` of each response token given the token before it (prompts are left-padded)."""
        input_ids = batch.batch["input_ids"]
        width_r = batch.batch["responses"].shape[1]
        previous = input_ids[:, -width_r - 1 : -1]
        return logprobs_from_logits(self(previous), batch.batch["responses"])


class ByteSamplingServer:
    """An OpenAI-compatible completions server sampling from the weights last loaded into it."""

    def __init__(self, model_name: str = "stand-in-policy") -> None:
        self.model_name = model_name
        self.policy = BigramPolicy()
        self.version = 0
        self.generator = torch.Generator().manual_seed(1234)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def load(self, state: Dict[str, torch.Tensor], version: int) -> None:
        self.policy.load_state_dict(state)
        self.version = version

    @torch.no_grad()
    def _sample(self, prompt_ids: List[int], max_tokens: int, temperature: float) -> tuple[List[int], List[float]]:
        ids, logprobs = [], []
        previous = prompt_ids[-1] if prompt_ids else PAD
        for _ in range(max_tokens):
            logits = self.policy(torch.tensor([previous]))[0]
            log_probs = torch.log_softmax(logits, dim=-1)
            if temperature > 0:
                token = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=self.generator))
            else:
                token = int(torch.argmax(logits))
            ids.append(token)
            logprobs.append(float(log_probs[token]))
            previous = token
        return ids, logprobs

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt_ids = list(str(body["prompt"]).encode("utf-8"))
        ids, logprobs = self._sample(prompt_ids, int(body.get("max_tokens") or 16), float(body.get("temperature", 1.0)))
        choice: Dict[str, Any] = {"index": 0, "text": bytes(ids).decode("ascii"), "finish_reason": "length"}
        choice["logprobs"] = {"tokens": [chr(i) for i in ids], "token_logprobs": logprobs}
        answer: Dict[str, Any] = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
        answer.update(model=body.get("model"), choices=[choice])
        if body.get("return_token_ids"):
            choice["token_ids"] = ids
            answer["prompt_token_ids"] = prompt_ids
        return web.json_response(answer)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model_name, "object": "model"}]})

    def start(self) -> "ByteSamplingServer":
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)


class StandInForVerlGpuWorkers:
    """verl's actor worker group and rollout replicas, played on CPU (see the module docstring)."""

    def __init__(self, config: DictConfig) -> None:
        self.actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
        self.group_size = int(config.actor_rollout_ref.rollout.n)
        self.policy = BigramPolicy()
        self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=float(config.actor_rollout_ref.actor.optim.lr))
        self.server = ByteSamplingServer().start()
        self.server.load(self.policy.state_dict(), version=0)
        self.calls: List[str] = []
        self.batches: List[DataProto] = []
        self.closed = False

    @property
    def server_urls(self) -> List[str]:
        return [self.server.base_url]

    @property
    def served_model(self) -> str:
        return self.server.model_name

    @property
    def pad_token_id(self) -> int:
        return PAD

    def compute_log_prob(self, batch: DataProto) -> DataProto:
        self.calls.append("compute_log_prob")
        with torch.no_grad():
            log_probs = self.policy.response_log_probs(batch)
        return DataProto.from_dict(tensors={"old_log_probs": log_probs})

    def compute_ref_log_prob(self, batch: DataProto) -> DataProto:
        self.calls.append("compute_ref_log_prob")
        with torch.no_grad():
            return DataProto.from_dict(tensors={"ref_log_prob": self.reference.response_log_probs(batch)})

    def update_actor(self, batch: DataProto) -> Dict[str, Any]:
        """verl's PPO update: ``ppo_epochs`` passes over mini-batches of ``ppo_mini_batch_size`` groups."""
        self.calls.append("update_actor")
        self.batches.append(batch)
        config = self.actor_config
        policy_loss = get_policy_loss_fn(config.policy_loss.loss_mode)
        rows = config.ppo_mini_batch_size * self.group_size
        losses: List[float] = []
        clipfracs: List[float] = []
        for _ in range(config.ppo_epochs):
            for mini in batch.split(rows):
                mask = mini.batch["response_mask"].float()
                log_prob = self.policy.response_log_probs(mini)
                loss, metrics = policy_loss(
                    old_log_prob=mini.batch["old_log_probs"],
                    log_prob=log_prob,
                    advantages=mini.batch["advantages"],
                    response_mask=mask,
                    loss_agg_mode=config.loss_agg_mode,
                    config=config,
                )
                if config.use_kl_loss:
                    kl = kl_penalty(log_prob, mini.batch["ref_log_prob"], kl_penalty=config.kl_loss_type)
                    loss = loss + config.kl_loss_coef * agg_loss(kl, mask, config.loss_agg_mode)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss))
                clipfracs.append(float(metrics.get("actor/pg_clipfrac", 0.0)))
        return {"actor/pg_loss": sum(losses) / len(losses), "actor/pg_clipfrac": sum(clipfracs) / len(clipfracs)}

    def pause_servers(self) -> None:
        self.calls.append("pause_servers")

    def sync_weights(self, step: int) -> None:
        self.calls.append("sync_weights")
        self.server.load(copy.deepcopy(self.policy.state_dict()), version=step)

    def close(self) -> None:
        self.closed = True
        self.server.stop()
