"""What the two gloo processes of the distributed tests run, and the one-process references.

Every scenario trains a tiny GPT on :class:`RaggedLM`, whose rows have random lengths, so the
two processes see different token counts in every micro-batch. Process 0 writes the final
parameters of each scenario to ``results.pt``; the tests compare them with one process that
takes the whole global batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.models.gpt import GPT, GPTConfig
from attnkit.objectives.chunked_ce import head_loss
from attnkit.training import ExecutionConfig, OptimConfig, ScheduleConfig, TrainConfig, Trainer

VOCAB, CONTEXT, BATCH = 31, 8, 3
STEPS = 4


class RaggedLM:
    """Next-token prediction on random rows of 2 to ``CONTEXT + 1`` tokens, padded: every
    micro-batch has its own target count."""

    def __init__(self, n_batches: int = 16, chunk: int = 0) -> None:
        self.n_batches, self.chunk = n_batches, chunk  # chunk > 0: the chunked output layer and loss

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        for _ in range(self.n_batches):
            x = torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=g)  # (B, T+1)
            lengths = torch.randint(2, CONTEXT + 2, (BATCH,), generator=g)  # (B,)
            yield x, torch.arange(CONTEXT + 1)[None, :] < lengths[:, None]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, keep = batch
        targets = x[:, 1:].masked_fill(~keep[:, 1:], -100)  # (B, T)
        if self.chunk:
            return head_loss(model, x[:, :-1], targets, chunk=self.chunk)
        logits = model(x[:, :-1]).logits  # (B, T, V)
        n = (targets != -100).sum()
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum") / n, n

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"loss": 0.0}


def tiny_gpt(tie: bool = True) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, context=CONTEXT, d_model=16, n_heads=2, n_layers=2, dropout=0.0, tie_embeddings=tie))


def config(*, steps: int = STEPS, grad_accum: int = 1, parallel: str = "auto", save_every: int = 0, **execution: Any) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=BATCH, grad_accum=grad_accum, log_every=1, save_every=save_every, device="cpu",
        # eps 1e-4: the key projection's bias has a gradient of rounding noise only (softmax ignores it), which
        # Adam with a tiny eps would blow up to full-size steps in any implementation, one process or two
        optim=OptimConfig(name="adamw", lr=1e-2, betas=(0.9, 0.99), eps=1e-4, weight_decay=0.1, clip_norm=1.0),
        schedule=ScheduleConfig(kind="constant", warmup=0),
        execution=ExecutionConfig(**{"precision": "fp32", "parallel": parallel, **execution}),  # type: ignore[arg-type]
    )


def train(out: Path, cfg: TrainConfig, *, resume: bool = False, hooks: list[Any] | None = None, tie: bool = True,
          chunk: int = 0) -> dict[str, Tensor]:
    """Train the tiny GPT; returns its parameters (full tensors, gathered under FSDP)."""
    trainer = Trainer(tiny_gpt(tie), RaggedLM(chunk=chunk), cfg, out, progress=False, hooks=hooks)
    trainer.fit(resume=resume)
    model = trainer.parallel.consolidated(trainer.model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()} if model is not None else {}


def counting_hook(per_step: list[int]) -> tuple[Any, Any]:
    """A DDP comm hook that averages like DDP's own and counts its calls, and a Trainer hook that
    files the count of each optimizer step in ``per_step``."""
    calls = [0]

    def hook(state, bucket):  # noqa: ANN001, ANN202 - DDP checks the annotations as objects, which postponed annotations are not
        calls[0] += 1
        t = bucket.buffer().div_(dist.get_world_size())
        return dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])

    def after_step(trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        per_step.append(calls[0])
        calls[0] = 0

    return hook, after_step


def worker(rank: int, world: int, tmp: str, port: int) -> None:
    """One of the two processes: every scenario in turn; process 0 saves what the tests check."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    root = Path(tmp)
    results: dict[str, Any] = {"ddp": train(root / "ddp", config(parallel="ddp", save_every=STEPS // 2))}
    per_step: list[int] = []
    hook, after_step = counting_hook(per_step)
    trainer = Trainer(tiny_gpt(), RaggedLM(), config(grad_accum=2, parallel="ddp"), root / "ddp_accum", progress=False, hooks=[after_step])
    trainer.forward_model.register_comm_hook(None, hook)  # type: ignore[operator]
    trainer.fit()
    results["ddp_accum"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    results["all_reduces"] = per_step
    results["fsdp_accum"] = train(root / "fsdp_accum", config(grad_accum=2, parallel="fsdp", save_every=STEPS // 2))
    # the chunked loss uses the head's weight inside the model's forward: DDP with an untied head, FSDP with a tied one
    results["ddp_chunked_untied"] = train(root / "ddp_chunked", config(grad_accum=2, parallel="ddp", checkpointing=True), tie=False, chunk=5)
    results["fsdp_chunked"] = train(root / "fsdp_chunked", config(grad_accum=2, parallel="fsdp"), chunk=5)
    if rank == 0:
        torch.save(results, root / "results.pt")
    dist.barrier()
    dist.destroy_process_group()
