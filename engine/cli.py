"""`python -m gpusleuth.engine serve|generate ...` (also reached as `agent engine ...`).

One command starts every tensor-parallel rank (see workers.py). Exit codes: 0 ok, 2 bad flag or configuration
(the message names the flag), 1 runtime failure. Thread names (probes/procname.py): the main thread is `gs-engine`;
`serve` runs the HTTP server on a thread `gs-http` (the main thread waits for SIGINT/SIGTERM), the steps on
`gs-step` (loop.py).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from typing import Any

from gpusleuth.probes.config import ConfigError
from gpusleuth.engine.config import PRESETS, EngineConfig, ModelSource, ServerConfig
from gpusleuth.engine.faults import FaultConfig
from gpusleuth.engine.sequence import SamplingError, SamplingParams
from gpusleuth.probes import procname

EXIT_CONFIG = 2


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    d = EngineConfig()
    g = p.add_argument_group("model and engine")
    g.add_argument("--preset", default="tiny", help=f"random-weight model shape: {', '.join(PRESETS)}")
    g.add_argument("--model-dir", default="", help="Hugging Face directory (config.json, *.safetensors)")
    g.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. num_layers=8 (layer-subset measurements)")
    g.add_argument("--tp", type=int, default=d.tp, help="tensor-parallel ranks started by this command")
    g.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    g.add_argument("--dtype", default=d.dtype, help="auto (bf16 on cuda, fp32 on cpu), float32, bfloat16, float16")
    g.add_argument("--kernels", default=d.kernels, help="auto (fused Triton on cuda), fused, torch")
    g.add_argument("--seed", type=int, default=d.seed, help="random-weight seed")
    g.add_argument("--init-std", type=float, default=d.init_std, help="std of random weights")
    g.add_argument("--block-size", type=int, default=d.block_size)
    g.add_argument("--num-cpu-blocks", type=int, default=d.num_cpu_blocks)
    g.add_argument("--cpu-threads", type=int, default=d.num_cpu_threads, help="torch threads on CPU; 0 = default")
    g.add_argument("--num-gpu-blocks", type=int, default=d.num_gpu_blocks, help="0 = size from free memory")
    g.add_argument("--kv-cache-fraction", type=float, default=d.kv_cache_fraction)
    g.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs)
    g.add_argument("--max-num-batched-tokens", type=int, default=d.max_num_batched_tokens)
    g.add_argument("--max-model-len", type=int, default=d.max_model_len)
    g.add_argument("--no-cuda-graphs", action="store_true", help="run decode eagerly")
    g.add_argument("--no-spans", action="store_true", help="do not send spans to the agent")
    f = p.add_argument_group("fault hooks (off by default; see faults.py)")
    fd = FaultConfig()
    f.add_argument("--fault-rank", type=int, default=fd.rank)
    f.add_argument("--fault-allreduce-delay-ms", type=float, default=fd.allreduce_delay_ms)
    f.add_argument("--fault-scheduler-sleep-ms", type=float, default=fd.scheduler_sleep_ms)
    f.add_argument("--fault-gpu-ballast-gib", type=float, default=fd.gpu_ballast_gib)
    f.add_argument("--fault-fsync-mb", type=int, default=fd.fsync_mb)
    f.add_argument("--fault-fsync-every-steps", type=int, default=fd.fsync_every_steps)
    f.add_argument("--fault-gc-pause-ms", type=float, default=fd.gc_pause_ms)
    f.add_argument("--fault-gc-every-steps", type=int, default=fd.gc_every_steps)
    f.add_argument("--fault-gil-hog-threads", type=int, default=fd.gil_hog_threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpusleuth-engine", description="The bundled Llama-family engine")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    _add_engine_flags(serve)
    sd = ServerConfig()
    serve.add_argument("--host", default=sd.host)
    serve.add_argument("--port", type=int, default=sd.port)
    serve.add_argument("--served-model-name", default=sd.served_model_name)
    serve.add_argument("--max-waiting", type=int, default=sd.max_waiting, help="queued requests before 429")
    gen = sub.add_parser("generate", help="offline generation, printed as text or JSON")
    _add_engine_flags(gen)
    gen.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    gen.add_argument("--prompt-ids", action="append", default=[], help="a prompt as comma-separated token ids")
    gen.add_argument("--max-tokens", type=int, default=32)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--sample-seed", type=int, default=None)
    gen.add_argument("--ignore-eos", action="store_true")
    gen.add_argument("--json", action="store_true", help="print one JSON object with token ids and text")
    return p


def _overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--override", f"{item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def spec_from_args(args: argparse.Namespace):
    """The LaunchSpec the flags describe (raises ConfigError naming the flag)."""
    from gpusleuth.engine.workers import LaunchSpec

    engine = EngineConfig(
        device=args.device, dtype=args.dtype, kernels=args.kernels, tp=args.tp, seed=args.seed, init_std=args.init_std,
        block_size=args.block_size, num_cpu_blocks=args.num_cpu_blocks, num_cpu_threads=args.cpu_threads,
        kv_cache_fraction=args.kv_cache_fraction, num_gpu_blocks=args.num_gpu_blocks, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
        is_cuda_graphs=not args.no_cuda_graphs)
    faults = FaultConfig(rank=args.fault_rank, allreduce_delay_ms=args.fault_allreduce_delay_ms,
                         scheduler_sleep_ms=args.fault_scheduler_sleep_ms, gpu_ballast_gib=args.fault_gpu_ballast_gib,
                         fsync_mb=args.fault_fsync_mb, fsync_every_steps=args.fault_fsync_every_steps,
                         gc_pause_ms=args.fault_gc_pause_ms, gc_every_steps=args.fault_gc_every_steps,
                         gil_hog_threads=args.fault_gil_hog_threads)
    source = ModelSource(preset=args.preset, model_dir=args.model_dir, overrides=_overrides(args.override))
    from gpusleuth.engine.tp import check_tp

    check_tp(source.model_config(), engine.tp)  # validate shapes and overrides before any rank starts
    return LaunchSpec(source=source, engine=engine, faults=faults, is_spans=not args.no_spans)


def _gc_watch(spec):
    """The process's garbage collections as gc spans while it runs (nothing when spans are off)."""
    from gpusleuth.engine.gc_spans import GcWatch

    return GcWatch() if spec.is_spans else contextlib.nullcontext()


def _make_engine(spec, runner, broadcast, gc_watch):
    from gpusleuth.engine.engine import LLMEngine
    from gpusleuth.engine.spans import SpanEmitter
    from gpusleuth.engine.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(runner.cfg, spec.source.model_dir)
    emitter = SpanEmitter(0, is_enabled=spec.is_spans, gc_watch=gc_watch)
    engine = LLMEngine(runner, tokenizer, broadcast=broadcast, emitter=emitter)
    engine.set_faults(spec.faults)
    return engine


def run_generate(args: argparse.Namespace, spec) -> int:
    from gpusleuth.engine.workers import start_ranks

    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.sample_seed, is_ignore_eos=args.ignore_eos)
    if not args.prompt and not args.prompt_ids:
        raise ConfigError("--prompt", "give at least one --prompt or --prompt-ids")
    with start_ranks(spec) as (runner, broadcast), _gc_watch(spec) as gc_watch:
        engine = _make_engine(spec, runner, broadcast, gc_watch)
        prompts = [engine.tokenizer.encode(t) for t in args.prompt]
        prompts += [[int(x) for x in s.split(",")] for s in args.prompt_ids]
        results = engine.generate(prompts, params)
        engine.faults.close()
    if args.json:
        print(json.dumps({"results": results, "kernels": runner.ops.name, "device": str(runner.device)}))
    else:
        for res in results:
            print(res["text"])
    return 0


def run_serve(args: argparse.Namespace, spec) -> int:
    from gpusleuth.engine.loop import EngineLoop
    from gpusleuth.engine.workers import start_ranks

    server_cfg = ServerConfig(host=args.host, port=args.port, served_model_name=args.served_model_name,
                              max_waiting=args.max_waiting)
    with start_ranks(spec) as (runner, broadcast), _gc_watch(spec) as gc_watch:
        engine = _make_engine(spec, runner, broadcast, gc_watch)
        name = server_cfg.served_model_name or engine.model_name
        loop = EngineLoop(engine, server_cfg.max_waiting)
        banner = f"(tp={spec.engine.tp}, kernels={runner.ops.name})"
        _serve_until_signalled(loop, server_cfg, name, banner, spec.source.model_dir)
        engine.faults.close()
    if loop.error:  # the engine could not continue: exit non-zero so systemd or Kubernetes restarts it
        print(f"gpusleuth engine: {loop.error}", file=sys.stderr)
        return 1
    return 0


def _serve_until_signalled(loop, server_cfg: ServerConfig, name: str, banner: str, model_dir: str = "") -> None:
    """The server on its own thread (`gs-http`); the main thread (`gs-engine`) waits for SIGINT/SIGTERM, or for
    the server to stop by itself (the engine failed)."""
    from gpusleuth.engine.api.chat_template import load_chat_template
    from gpusleuth.engine.server import serve

    aio: dict[str, Any] = {}
    stop_requested = threading.Event()  # a signal that came before the server's loop existed
    failed: list[BaseException] = []

    async def main() -> None:
        aio["stop"], aio["loop"] = asyncio.Event(), asyncio.get_running_loop()
        if stop_requested.is_set():
            aio["stop"].set()
        ready = aio["loop"].create_future()
        ready.add_done_callback(lambda f: print(f"serving {name} on http://{server_cfg.host}:{f.result()} {banner}",
                                                flush=True))
        await serve(loop, server_cfg, name, aio["stop"], ready, load_chat_template(model_dir))

    def run() -> None:
        procname.set_thread_name(procname.HTTP)
        try:
            asyncio.run(main())
        except BaseException as exc:  # re-raised on the main thread, which owns the exit code
            failed.append(exc)

    def on_signal(signum, frame) -> None:
        stop_requested.set()
        try:
            if "loop" in aio:
                aio["loop"].call_soon_threadsafe(aio["stop"].set)
        except RuntimeError:  # the server's loop has closed already: it is stopping anyway
            pass

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = threading.Thread(target=run, name="gpusleuth-http")
    try:
        server.start()
        while server.is_alive():
            server.join(timeout=0.5)  # wakes for signal handlers (they run on the main thread)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise failed[0]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code. Without `argv` (sys.argv: this is the program) it names the
    process `gs-engine`."""
    args = parser().parse_args(argv)
    if argv is None:  # the process's own command line (not a test calling in): name it before threads start
        procname.set_thread_name(procname.ENGINE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = spec_from_args(args)
        return run_generate(args, spec) if args.command == "generate" else run_serve(args, spec)
    except ConfigError as exc:
        flag = ("--fault-" if exc.key in FaultConfig.__dataclass_fields__ else "--") + exc.key.replace("_", "-")
        print(f"gpusleuth engine: {flag}: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except SamplingError as exc:
        print(f"gpusleuth engine: --{exc.param.replace('_', '-')}: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
