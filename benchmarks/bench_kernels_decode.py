"""Paged decode attention benchmark (imported by bench_kernels.py) and the summary against the issue's targets.

Llama-3-8B attention shapes (32 query heads, 8 KV heads, head_dim 128, bf16, 16-token blocks scattered at random in
the cache), context 4k-32k, batch 1/8/32. Bytes counted: the K and V rows of every context token read once, q read,
the output written. Baselines: the torch reference (gathers the paged cache, float32 math), torch SDPA on a
contiguous copy of the same K/V (what a non-paged fused kernel reaches on the same bytes), torch.compile of the
reference at the smaller sizes.
"""

import torch
import torch.nn.functional as F

import gpusleuth.kernels as K
from bench_kernels_common import fmt_row, log, rel_err, row, safe_check, time_fn
from gpusleuth.kernels.attention_decode import DecodeConfig, _num_splits

MAX_KV_BYTES = 5 << 30  # K + V of one layer; keeps the largest case inside an 80 GB GPU with the baselines
SWEEP = [(32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 8, 2), (128, 4, 2), (128, 8, 3)]  # block_n, warps, stages


def _cache(ctx, B: int, L: int, hk: int, d: int, block: int):
    blocks_per_seq = -(-L // block)
    num_blocks = B * blocks_per_seq
    table = torch.randperm(num_blocks, device=ctx.device).to(torch.int32).view(B, blocks_per_seq)
    k = ctx.rand(num_blocks, block, hk, d)
    v = ctx.rand(num_blocks, block, hk, d)
    lens = torch.full((B,), L, dtype=torch.int32, device=ctx.device)
    return k, v, table, lens


def _cases(ctx) -> list[tuple[int, int]]:
    if ctx.args.smoke:
        return [(2, 40)]
    cases = [(B, L) for L in (4096, 8192, 16384, 32768) for B in (1, 8, 32)]
    return [(B, L) for B, L in cases if B * L * 8 * 128 * 2 * 2 <= MAX_KV_BYTES]


def _sdpa(q, k, v, table, L, scale):
    """Contiguous [B, Hk, L, D] copies of the paged K/V, then SDPA with GQA."""
    B, hk, d = q.shape[0], k.shape[2], k.shape[3]
    kc = k[table.long()].reshape(B, -1, hk, d)[:, :L].transpose(1, 2).contiguous()
    vc = v[table.long()].reshape(B, -1, hk, d)[:, :L].transpose(1, 2).contiguous()
    qc = q[:, :, None, :]
    try:
        fn = lambda: F.scaled_dot_product_attention(qc, kc, vc, scale=scale, enable_gqa=True)  # noqa: E731
        fn()
    except TypeError:  # torch < 2.5 has no enable_gqa
        g = q.shape[1] // hk
        kc, vc = kc.repeat_interleave(g, 1), vc.repeat_interleave(g, 1)
        fn = lambda: F.scaled_dot_product_attention(qc, kc, vc, scale=scale)  # noqa: E731
    return fn


def bench_decode(ctx) -> list[dict]:
    rows = []
    hq, hk, d, block = (8, 2, 16, 16) if ctx.args.smoke else (32, 8, 128, 16)
    scale = d ** -0.5
    for B, L in _cases(ctx):
        k, v, table, lens = _cache(ctx, B, L, hk, d, block)
        q = ctx.rand(B, hq, d)
        nbytes = B * L * hk * d * 2 * 2 + 2 * q.numel() * 2 + table.numel() * 4
        splits = _num_splits(DecodeConfig(), B, hk, table.shape[1] * block, ctx.device)
        tri = lambda: K.paged_decode_attention(q, k, v, table, lens, scale)  # noqa: E731
        ref = lambda: K.paged_decode_attention_ref(q, k, v, table, lens, scale)  # noqa: E731
        timings = {"triton": time_fn(tri, ctx.device, nbytes, True), "eager": time_fn(ref, ctx.device, nbytes, True)}
        check = safe_check(lambda: rel_err(tri(), ref()))
        if ctx.device.type == "cuda":
            timings["sdpa"] = time_fn(_sdpa(q, k, v, table, L, scale), ctx.device, nbytes, True)
            if L <= 8192 and not ctx.over_budget():
                compiled = ctx.compiler.compile(f"decode B={B} L={L}", ref)
                if compiled is not None:
                    timings["compile"] = time_fn(compiled, ctx.device, nbytes, True)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row("paged_decode", f"B={B} ctx={L} q{hq}/kv{hk}x{d} bf16", nbytes, ctx.copy_gbs, timings,
                        check, batch=B, context=L, num_splits=splits))
        log(fmt_row(rows[-1]))
        swept = ctx.args.smoke or (B in (1, 32) and L in (8192, 32768))
        if swept and not ctx.args.no_sweep and not ctx.over_budget():
            rows.extend(_sweep(ctx, q, k, v, table, lens, scale, nbytes, B, L, splits))
        del k, v
    return rows


def _sweep(ctx, q, k, v, table, lens, scale, nbytes, B, L, splits) -> list[dict]:
    rows = []
    configs = [DecodeConfig(block_n=n, num_warps=w, num_stages=s) for n, w, s in SWEEP]
    configs += [DecodeConfig(num_splits=max(1, splits // 2)), DecodeConfig(num_splits=splits * 2)]
    for cfg in configs:
        t = time_fn(lambda: K.paged_decode_attention(q, k, v, table, lens, scale, cfg), ctx.device, nbytes, True)
        label = f"B={B} ctx={L} n={cfg.block_n} w={cfg.num_warps} st={cfg.num_stages} splits={cfg.num_splits}"
        rows.append(row("paged_decode/sweep", label, nbytes, ctx.copy_gbs, {"triton": t}, batch=B, context=L))
        log(fmt_row(rows[-1]))
    return rows


def _pct(r: dict, impl: str = "triton") -> float | None:
    return (r.get(impl) or {}).get("pct_of_copy")


def summarize(rows: list[dict], judged: bool = True) -> list[dict]:
    """One entry per acceptance target: measured figure and whether it is met (None: not measured/judged)."""
    out = []
    for name in ("rms_norm", "add_rms_norm", "swiglu", "rope"):
        large = [r for r in rows if r["kernel"] == name and "(large)" in r["shape"]]
        if not large:
            continue
        r = large[0]
        pct, vs = _pct(r), r.get("speedup_vs_compile")
        best = max((_pct(s) or 0 for s in rows if s["kernel"] == name + "/sweep"), default=None)
        out.append({"target": f"{name} >= 90% of copy at large size and faster than torch.compile",
                    "measured": f"{_fmt_pct(pct)} of copy (best swept config {_fmt_pct(best)}), "
                                f"{'n/a' if vs is None else f'{vs:.2f}x'} vs torch.compile",
                    "met": None if pct is None or vs is None or not judged else bool(pct >= 0.9 and vs > 1.0)})
    decode = [r for r in rows if r["kernel"] == "paged_decode"]
    for B in sorted({r["batch"] for r in decode}):
        pcts = [(r["context"], _pct(r)) for r in decode if r["batch"] == B]
        worst = min((p for _, p in pcts if p is not None), default=None)
        out.append({"target": f"decode attention >= 80% of copy at 4k-32k context (batch {B})",
                    "measured": ", ".join(f"ctx {c}: {_fmt_pct(p)}" for c, p in pcts),
                    "met": None if worst is None or not judged else bool(worst >= 0.8)})
    return out


def _fmt_pct(p: float | None) -> str:
    return "n/a" if p is None else f"{100 * p:.0f}%"
