"""Where one rag-token decode step at k = 5 (+ the null row: 6 rows) spends its time, per generator precision.

    .venv/bin/python bench/decode_profile.py [--precisions float32,bfloat16] [--steps 6] [--write]

torch.profiler over ``--steps`` lockstep steps (prompts of bench/rag_token_speed.py, 1 thread), the
precisions in turn for each step so that both see the same load. Operators are grouped: the
model's matrix products (Linear layers, the LM head among them), attention (SDPA), the other
tensor operators (norms, rotary embedding, activations, adds, KV-cache writes, the mask), and what
is left of the step's wall time outside any operator (Python: modules, cache bookkeeping). The LM
head's share is measured apart (a hook times it). ``--attn eager`` profiles the eager attention.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, publish  # noqa: E402

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from generator_precision import K, lanes, prompts  # noqa: E402

from assistant.config import GeneratorConfig  # noqa: E402
from assistant.generator import Generator, convert  # noqa: E402
from assistant.lockstep import LockstepBatch  # noqa: E402

HEADING = "## Decode profile: one rag-token step at k = 5 + null row"
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "quantized::linear_dynamic", "aten::linear_dynamic_fp16"}
ATTENTION = "attention"  # any operator whose name holds this (SDPA's CPU kernels)


class HeadTimer:
    """Wall seconds spent in the LM head's forward."""

    def __init__(self, model) -> None:
        self.seconds = 0.0
        head = model.get_output_embeddings()
        head.register_forward_pre_hook(lambda *_: setattr(self, "_t", time.perf_counter()))
        head.register_forward_hook(lambda *_: setattr(self, "seconds", self.seconds + time.perf_counter() - self._t))


def leaf_self_times(prof) -> dict[str, float]:
    """Self CPU microseconds by operator name."""
    return {e.key: e.self_cpu_time_total for e in prof.key_averages()}


def profile_steps(model, pad_id: int, rows: list[list[int]], steps: int) -> tuple[dict[str, float], float, float]:
    """(self CPU µs by operator, wall seconds of the steps, LM head seconds), summed over ``steps``."""
    lane = lanes()["k5+1"]
    batch = LockstepBatch(model, rows, pad_id)
    token = int(lane.combine(batch.prefill().unsqueeze(0))[0].argmax())
    for _ in range(2):  # warm-up
        token = int(lane.combine(batch.step(torch.full((K + 1,), token, dtype=torch.long)).unsqueeze(0))[0].argmax())
    head = HeadTimer(model)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            logprobs = batch.step(torch.full((K + 1,), token, dtype=torch.long))  # (R, V)
            token = int(lane.combine(logprobs.unsqueeze(0))[0].argmax())  # (1, R, V) -> (V,)
        wall = time.perf_counter() - started
    return leaf_self_times(prof), wall, head.seconds


def groups(times: dict[str, float], wall: float, head: float, steps: int) -> dict[str, float]:
    """Milliseconds per step: matmul (of which the LM head), attention, other operators, outside operators."""
    matmul = sum(v for k, v in times.items() if k in MATMUL) / 1e3 / steps
    attention = sum(v for k, v in times.items() if ATTENTION in k and k not in MATMUL) / 1e3 / steps
    total_ops = sum(times.values()) / 1e3 / steps
    step = 1e3 * wall / steps
    return {"step": step, "matmul": matmul, "head": 1e3 * head / steps, "attention": attention,
            "other": total_ops - matmul - attention, "outside": step - total_ops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--attn", default="sdpa", help="attention implementation: sdpa (the default) or eager")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = Generator.from_config(GeneratorConfig(dtype="float32"))
    rows = prompts(base, K)
    models = {}
    for name in args.precisions.split(","):
        models[name] = convert(copy.deepcopy(base.model), name).eval()
        models[name].set_attn_implementation(args.attn)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            runs[name].append(groups(*profile_steps(model, base.pad_id, rows, args.steps), args.steps))
    lines = ["| precision | step (ms) | matrix products (ms) | of which LM head | attention (SDPA) | other operators | "
             "outside operators (Python) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, samples in runs.items():
        best = min(samples, key=lambda g: g["step"])  # the least disturbed round
        share = lambda v: f"{v:.1f} ({100 * v / best['step']:.0f}%)"  # noqa: E731
        lines.append(f"| {name} | {best['step']:.1f} | {share(best['matmul'])} | {share(best['head'])} | "
                     f"{share(best['attention'])} | {share(best['other'])} | {share(best['outside'])} |")
    text = "\n".join([
        f"`.venv/bin/python bench/decode_profile.py --precisions {args.precisions} --steps {args.steps} "
        f"--rounds {args.rounds} --attn {args.attn}`; {machine()}; 1 thread, {len(rows[0])}-token prompts, "
        f"{K} + 1 rows; the least disturbed of {args.rounds} rounds.", "", *lines])
    publish(HEADING + ("" if args.attn == "sdpa" else f" ({args.attn} attention)"), text, args.write)


if __name__ == "__main__":
    main()
