#!/usr/bin/env python3
"""PyTorch reference for Memento's GPU training step: the same Llama, the same work per step.

A self-contained Llama (RMSNorm, RoPE rotate-half, SwiGLU, causal SDPA, untied head, no biases)
trained on random tokens with bf16 autocast over fp32 master weights, fused AdamW
(lr 3e-4, betas (0.9, 0.95), weight decay 0.1) and gradient clipping at 1.0, as the trainer does.
Steps are timed with CUDA events; the median over the steps after --warmup is reported as one JSON
line on stdout (progress goes to stderr):
  tokens_per_s, mfu, peak_bytes (torch.cuda.max_memory_allocated), step_ms, params, ...
MFU counts 6 * N (non-embedding parameters, head included) + 6 * L * T * C FLOPs per token, the
trainer's LlamaModel::flops_per_token, against --peak-tflops (989: H100/H200 bf16 dense).

A benchmark, not a test: scripts/bench_gpu.sh runs it; the CPU test-suite never imports it.
  usage: python3 bench/torch_reference.py --preset 134m [--compile] [--steps 10 --warmup 3]
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# The single-GPU shapes of configs/llama-134m.yaml and configs/llama-1b.yaml (the figures in
# docs/performance.md).
PRESETS = {
    "134m": dict(layers=12, dim=768, heads=12, kv_heads=12, ffn=2048, batch=16, seq=1024),
    "1b": dict(layers=16, dim=2048, heads=16, kv_heads=16, ffn=5504, batch=4, seq=2048),
}
VOCAB = 32000
ROPE_THETA = 10000.0
NORM_EPS = 1e-5
INIT_STD = 0.02


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Statistics in fp32 whatever the input dtype, as the trainer's kernel does.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS)
        return y.type_as(x) * self.weight


def rope_tables(seq, head_size, device):
    """cos, sin of shape (T, HS) for rotate-half RoPE: frequency i pairs channel i with i + HS/2."""
    exponents = torch.arange(0, head_size, 2, device=device).float() / head_size
    inv_freq = 1.0 / (ROPE_THETA ** exponents)
    angles = torch.outer(torch.arange(seq, device=device).float(), inv_freq)  # (T, HS/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, HS)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):  # x: (B, NH, T, HS)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.head_size = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.head_size, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.head_size, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.head_size, bias=False)
        self.wo = nn.Linear(heads * self.head_size, dim, bias=False)

    def forward(self, x, cos, sin):  # x: (B, T, C)
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.heads, self.head_size).transpose(1, 2)
        k = self.wk(x).view(B, T, self.kv_heads, self.head_size).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv_heads, self.head_size).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_heads != self.heads:  # grouped-query attention: share each K/V head
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, NH, T, HS)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):  # SwiGLU
    def __init__(self, dim, ffn):
        super().__init__()
        self.w1 = nn.Linear(dim, ffn, bias=False)  # gate
        self.w3 = nn.Linear(dim, ffn, bias=False)  # up
        self.w2 = nn.Linear(ffn, dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, dim, heads, kv_heads, ffn):
        super().__init__()
        self.attention_norm = RMSNorm(dim)
        self.attention = Attention(dim, heads, kv_heads)
        self.ffn_norm = RMSNorm(dim)
        self.feed_forward = FeedForward(dim, ffn)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, layers, dim, heads, kv_heads, ffn, seq, device):
        super().__init__()
        self.tok_embeddings = nn.Embedding(VOCAB, dim)
        self.layers = nn.ModuleList(Block(dim, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.output = nn.Linear(dim, VOCAB, bias=False)  # untied head
        cos, sin = rope_tables(seq, dim // heads, device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for p in self.parameters():
            if p.dim() >= 2:  # matrices and the embedding; norm weights stay at 1
                nn.init.normal_(p, std=INIT_STD)

    def forward(self, tokens):  # (B, T) -> logits (B, T, V)
        T = tokens.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.output(self.norm(x))


def flops_per_token(non_embedding_params, layers, seq, dim):
    """The trainer's LlamaModel::flops_per_token: 6 N + 6 L T C."""
    return 6.0 * non_embedding_params + 6.0 * layers * seq * dim


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), help="shape defaults (flags override)")
    for name in ("layers", "dim", "heads", "kv-heads", "ffn", "batch", "seq"):
        p.add_argument("--" + name, type=int)
    p.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 disables, as in the trainer")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="MFU denominator")
    p.add_argument("--device", default="cuda", help="cuda (timed); cpu only for a smoke run")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    shape = dict(PRESETS[args.preset]) if args.preset else {}
    for key in ("layers", "dim", "heads", "kv_heads", "ffn", "batch", "seq"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    missing = [k for k in ("layers", "dim", "heads", "ffn", "batch", "seq") if k not in shape]
    if missing:
        p.error("set --preset or all of: " + ", ".join("--" + k for k in missing))
    if args.heads is not None and args.kv_heads is None:
        shape["kv_heads"] = args.heads  # a new head count without --kv-heads: multi-head
    shape.setdefault("kv_heads", shape["heads"])
    head_size, rem = divmod(shape["dim"], shape["heads"])
    if rem or shape["heads"] % shape["kv_heads"] or head_size % 2:
        p.error(f"need heads | dim, kv_heads | heads and an even head size: {shape}")
    if args.steps < 1 or args.warmup < 0:
        p.error("need --steps >= 1 and --warmup >= 0")
    return args, shape


def main(argv):
    args, s = parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("torch_reference.py: CUDA is not available")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    model = Llama(s["layers"], s["dim"], s["heads"], s["kv_heads"], s["ffn"], s["seq"], device)
    model = model.to(device)
    params = sum(p.numel() for p in model.parameters())
    non_embedding = params - model.tok_embeddings.weight.numel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  eps=1e-8, fused=cuda)
    forward = torch.compile(model) if args.compile else model

    B, T = s["batch"], s["seq"]
    total = args.warmup + args.steps
    # All batches drawn before timing: (B, T + 1) windows, inputs [0, T), targets [1, T].
    generator = torch.Generator(device=device).manual_seed(args.seed)
    batches = [torch.randint(0, VOCAB, (B, T + 1), device=device, generator=generator)
               for _ in range(total)]

    def train_step(batch):
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), y.view(-1))
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip, foreach=cuda)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    print(f"torch {torch.__version__}, {params / 1e6:.1f}M parameters ({non_embedding / 1e6:.1f}M "
          f"non-embedding), {B} x {T}, {'compile' if args.compile else 'eager'}, "
          f"{args.warmup} + {args.steps} steps", file=sys.stderr)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(total)]
    seconds, losses = [], []
    for i, batch in enumerate(batches):
        if cuda:
            events[i][0].record()
            losses.append(train_step(batch))
            events[i][1].record()
        else:
            start = time.perf_counter()
            losses.append(train_step(batch))
            seconds.append(time.perf_counter() - start)
        if i < args.warmup and cuda:
            torch.cuda.synchronize(device)  # compilation and autotuning stay out of the timed steps
            print(f"warm-up step {i + 1}/{args.warmup} done", file=sys.stderr)
    if cuda:
        torch.cuda.synchronize(device)
        seconds = [start.elapsed_time(end) / 1e3 for start, end in events]
    timed = seconds[args.warmup:]
    step_s = statistics.median(timed)
    tokens_per_s = B * T / step_s
    flops = flops_per_token(non_embedding, s["layers"], T, s["dim"])
    final_loss = float(losses[-1])
    if not math.isfinite(final_loss):
        sys.exit(f"torch_reference.py: loss is not finite ({final_loss})")
    peak = torch.cuda.max_memory_allocated(device) if cuda else 0
    mfu = flops * tokens_per_s / (args.peak_tflops * 1e12)
    print(json.dumps({
        "preset": args.preset, "mode": "compile" if args.compile else "eager", **s,
        "params": params, "non_embedding_params": non_embedding,
        "tokens_per_s": round(tokens_per_s, 1), "mfu": round(mfu, 5),
        "peak_bytes": peak, "peak_gib": round(peak / 2**30, 2),
        "step_ms": round(step_s * 1e3, 3), "step_ms_min": round(min(timed) * 1e3, 3),
        "step_ms_max": round(max(timed) * 1e3, 3), "loss": round(final_loss, 4),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
