"""Nsight Compute's view of the engine's NVTX ranges: do the GPU kernels fall inside the scheduler steps' ranges?

Runs `agent engine generate` (llama3-8b shapes cut to --layers layers, CUDA graphs on) under `ncu --nvtx` twice:
1. `--print-nvtx-rename kernel`: every profiled kernel is reported under its innermost NVTX push/pop range, so each
   row says "step N" or, for kernels launched outside any step (weight init, the KV-cache sizing pass, CUDA-graph
   warm-up and capture), its own name. Expected: once the first step starts, every kernel belongs to a step.
2. `--nvtx-include "step 3/"`: ncu profiles only the kernels of decode step 3 (a CUDA-graph replay).
Writes a JSON summary and both raw ncu outputs next to it.

    python3 benchmarks/nvtx_steps_check.py --out benchmarks/results/nvtx_steps_check.json
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

STEP = re.compile(r"^step \d+$")
IN_STEP = re.compile(r"(?:^|:)(step \d+)(?:/|:|$)")  # "step 6/kernel" (renamed) or "<domain>:step 6:..." (column)


def engine_cmd(args) -> list[str]:
    return [sys.executable, "-m", "gpusleuth.engine", "generate", "--preset", "llama3-8b",
            "--override", f"num_layers={args.layers}", "--max-num-seqs", "4", "--max-model-len", "1024",
            "--num-gpu-blocks", "256", "--no-spans", "--ignore-eos", "--max-tokens", str(args.tokens),
            "--prompt", "the kernels of each step"]


def run_ncu(ncu: str, flags: list[str], cmd: list[str], log: Path) -> tuple[int, str]:
    full = [ncu, "--nvtx", "--metrics", "gpu__time_duration.sum", "--csv", "--page", "raw", *flags, *cmd]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=600)
    log.write_text(" ".join(full) + "\n\n" + proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc.returncode, proc.stdout


def kernel_rows(text: str) -> list[dict]:
    """The CSV rows of ncu's raw page (lines before the header are the application's own output)."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"')), None)
    if start is None:
        return []
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    return [r for r in rows if r.get("ID", "").isdigit()]


def step_of(row: dict) -> str:
    """"step N" when the kernel ran inside that step's push/pop range (ncu's renamed kernel or its NVTX
    push/pop column), else the kernel's own name."""
    for key in ("Kernel Name", *[k for k in row if k and ("Push/Pop" in k or "nvtx" in k.lower())]):
        found = IN_STEP.search(row.get(key) or "")
        if found:
            return found.group(1)
    return row.get("Kernel Name", "")


def request_phase(row: dict) -> str:
    """The engine's request-phase start/end range the kernel ran in ("req <id> decode"), if any."""
    for key in (k for k in row if k and "Start/Stop" in k):
        found = re.search(r"(req \S+ \w+)", row.get(key) or "")
        if found:
            return found.group(1)
    return ""


def summarise(text1: str, text2: str) -> dict:
    rows = kernel_rows(text1)
    names = [step_of(r) for r in rows]
    first_step = next((i for i, n in enumerate(names) if STEP.match(n)), None)
    after = names[first_step:] if first_step is not None else []
    outside_after = [n for n in after if not STEP.match(n)]
    steps = sorted({n for n in after if STEP.match(n)}, key=lambda s: int(s.split()[1]))
    phases = sorted({request_phase(r) for r in rows[first_step or 0:]} - {""}) if first_step is not None else []
    step3 = kernel_rows(text2)
    return {"kernels_profiled": len(names), "kernels_before_first_step": first_step,
            "kernels_from_first_step": len(after), "of_those_outside_a_step": len(outside_after),
            "outside_examples": outside_after[:10], "steps_seen": steps,
            "kernels_per_step": {s: after.count(s) for s in steps}, "request_phase_ranges_seen": phases,
            "step3_only_run": {"kernels": len(step3), "all_in_step_3": all(step_of(r) == "step 3" for r in step3)},
            "ok": bool(after) and not outside_after and len(step3) > 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=6)
    p.add_argument("--out", default="benchmarks/results/nvtx_steps_check.json")
    p.add_argument("--from-files", action="store_true", help="re-read the two ncu outputs saved beside --out")
    args = p.parse_args()
    ncu = shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = engine_cmd(args)
    renamed, step3 = out.with_suffix(".renamed.txt"), out.with_suffix(".step3.txt")
    rcs = []
    if not args.from_files:
        rcs.append(run_ncu(ncu, ["--print-nvtx-rename", "kernel"], cmd, renamed)[0])
        rcs.append(run_ncu(ncu, ["--nvtx-include", "step 3/"], cmd, step3)[0])
    result = {"benchmark": "nvtx_steps_check", "engine": " ".join(cmd[2:]), "ncu_rc": rcs,
              **summarise(renamed.read_text(), step3.read_text())}
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "step3_only_run"}, indent=1))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
