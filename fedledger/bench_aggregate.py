"""``fedledger bench aggregate``: median speed against numpy, and streamed aggregation's memory, in one process.

    fedledger bench aggregate [--json PATH] [--quick] [--n 50] [--d 1000000] [--stream-n 1000] [--stream-d 1000000]

1. Speed, in memory, on ``n`` x ``d`` float32 updates (deterministic random data, best of ``--repeats`` wall-clock
   runs each): ``np.median(stack, axis=0)`` (how Flower's FedMedian computes it) against ``coordinate_median``, and the
   whole rule (``run_rule``: median, exact norms and dot products against it, free-rider tests against zero and
   the previous global step and copy tests on the round's column subset, scores, decisions, aggregate) against
   ``np.median`` alone and against the original definitions (``ReferenceSource``: ``_reference_*``), and rule
   version 7's first pass (the median with stakes as votes, 1 to 5 per update) against the plain first pass. Every
   result is compared bit for bit.
2. Streaming, on ``stream_n`` x ``stream_d`` updates written as safetensors files in a temporary directory (reduced,
   and said so, when the disk cannot hold them): ``evaluate_round_streamed`` runs in a child process, which reports
   its own peak RSS (/proc/self/status VmHWM; the parent also reads getrusage(RUSAGE_CHILDREN)), twice with
   different block sizes; both outcomes must be identical. On the in-memory size, the streamed outcome (files) must
   equal ``evaluate_round`` (bytes) bit for bit, with invalid blobs (NaN, wrong shape, junk) mixed in; on the
   streamed size, the streamed outcome must equal ``run_rule`` over the whole stack loaded in memory (when it fits).

Timings are wall-clock on whatever else the machine is doing: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HEADER_BYTES = 128  # safetensors header of a one-tensor update, rounded up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="write the measurements to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small sizes (CI): 8 x 20k in memory, 40 x 20k streamed")
    parser.add_argument("--n", type=int, default=None, help="updates for the in-memory speed test (default 50)")
    parser.add_argument("--d", type=int, default=None, help="parameters per update (default 1,000,000)")
    parser.add_argument("--stream-n", type=int, default=None, help="updates streamed from disk (default 1,000)")
    parser.add_argument("--stream-d", type=int, default=None, help="parameters per streamed update (default 1M)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method, best taken (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the update files (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    # internal: the child process that runs one streamed aggregation and reports its own peak RSS
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.child is not None:
        return _child(args.child)
    from rich.console import Console

    console = Console()
    sizes = _sizes(args)
    report: dict[str, Any] = {"command": _command(args), "sizes": dict(sizes), "machine": _machine()}
    base_dir = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    base_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-agg-", dir=base_dir) as tmp:
        work = Path(tmp)
        with console.status("in memory: np.median vs coordinate_median, and the whole rule"):
            report.update(_speed(sizes["n"], sizes["d"], sizes["repeats"], args.seed))
        with console.status("streamed vs in memory on the in-memory size (with invalid blobs)"):
            report.update(_stream_vs_memory(work / "small", sizes["n"], sizes["d"], args.seed))
        stream_n = _fit_to_disk(work, sizes["stream_n"], sizes["stream_d"], report)
        with console.status(f"writing {stream_n} x {sizes['stream_d']:,} updates as safetensors files"):
            t0 = time.perf_counter()
            _write_round(work / "big", stream_n, sizes["stream_d"], args.seed + 1)
            report["stream_generate_seconds"] = time.perf_counter() - t0
        report.update(_stream_big(console, work / "big", stream_n, sizes["stream_d"]))
        with console.status(f"the same {stream_n} x {sizes['stream_d']:,} round in memory (StackSource)"):
            report.update(_big_in_memory(work / "big", stream_n, sizes["stream_d"], report))
    report["machine"]["loadavg_after"] = os.getloadavg()
    report["bit_identical"] = bool(
        report["median_bit_identical_vs_numpy"]
        and report["median_bit_identical_vs_reference"]
        and report["rule_bit_identical_vs_reference"]
        and report["weighted_median_bit_identical_vs_reference"]
    )
    report["stream_bit_identical"] = bool(
        report["stream_vs_memory_bit_identical"]
        and report["stream_runs_identical"]
        and report.get("stream_big_vs_memory_bit_identical") is not False  # None: not enough memory to compare
    )
    _print(console, report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    ok = report["bit_identical"] and report["stream_bit_identical"]
    return 0 if ok else 1


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    quick = {"n": 8, "d": 20_000, "stream_n": 40, "stream_d": 20_000, "repeats": 2}
    full = {"n": 50, "d": 1_000_000, "stream_n": 1_000, "stream_d": 1_000_000, "repeats": 3}
    sizes = dict(quick if args.quick else full)
    for key in ("n", "d", "stream_n", "stream_d", "repeats"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{key.replace('_', '-')} must be >= 1, got {value}")
            sizes[key] = value
    return sizes


def _command(args: argparse.Namespace) -> str:
    parts = ["fedledger bench aggregate"]
    if args.quick:
        parts.append("--quick")
    for key in ("n", "d", "stream_n", "stream_d", "repeats"):
        if getattr(args, key) is not None:
            parts.append(f"--{key.replace('_', '-')} {getattr(args, key)}")
    if args.json is not None:
        parts.append(f"--json {args.json}")
    return " ".join(parts)


def _machine() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "loadavg_before": os.getloadavg(),
    }


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _updates(n: int, d: int, seed: int) -> np.ndarray:
    """n updates around a shared direction; every 5th is a sign-flipped x4 attacker, so decisions reject some."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d, dtype=np.float32)
    stack = np.empty((n, d), dtype=np.float32)
    for i in range(n):
        stack[i] = _one_update(direction, i, d, seed)
    return stack


def _one_update(direction: np.ndarray, i: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, i])
    u = direction + np.float32(1.5) * rng.standard_normal(d, dtype=np.float32)
    u *= np.float32(0.01 * (1 + (i % 7) / 7))
    if i % 5 == 4:
        u *= np.float32(-4.0)
    return u


def _speed(n: int, d: int, repeats: int, seed: int) -> dict[str, Any]:
    import torch

    from trainer import aggregation as agg
    from trainer.rules import RuleConfig

    stack_np = _updates(n, d, seed)
    stack = torch.from_numpy(stack_np)
    base = np.zeros(d, dtype=np.float32)
    # the previous round's global step: the free-rider test measures every update against it (rules.py)
    step = np.float32(0.01) * np.random.default_rng([seed, 1 << 20]).standard_normal(d, dtype=np.float32)
    rule = RuleConfig()
    seed = agg.subset_seed([hashlib.sha256(row.tobytes()).digest() for row in stack_np], d)
    agg.warm_up()  # compiled kernels: compile (or load from the cache) before timing, as a running service has
    t_np, np_med = _best(lambda: np.median(stack_np, axis=0), repeats)
    t_fast, fast_med = _best(lambda: agg.coordinate_median(stack), repeats)
    fast = agg.StackSource(stack_np)
    t_rule, (verdicts, new) = _best(lambda: agg.run_rule(fast, base, rule, step, seed), repeats)
    t_first, _ = _best(lambda: fast.first_pass(agg.subset_columns(d, seed)), repeats)
    t_agg, _ = _best(lambda: fast.aggregate(base, verdicts.keep, verdicts.median, rule), repeats)
    votes = [1 + i % 5 for i in range(n)]  # rule version 7: stakes as votes in the median
    t_voted, (voted_med, _, _) = _best(lambda: fast.median_pass(range(n), votes=votes), repeats)
    t0 = time.perf_counter()
    ref_verdicts, ref_new = agg.run_rule(agg.ReferenceSource(stack_np), base, rule, step, seed)
    t_ref = time.perf_counter() - t0

    same_bits = lambda a, b: np.asarray(a).tobytes() == np.asarray(b).tobytes()  # noqa: E731
    same_rule = same_bits(verdicts.median, ref_verdicts.median) and same_bits(new, ref_new) and all(
        getattr(verdicts, f) == getattr(ref_verdicts, f)
        for f in ("statuses", "fixed", "cosine", "norm_ratio", "clip", "group", "keep")
    )
    return {
        "np_median_seconds": t_np,
        "fast_median_seconds": t_fast,
        "median_speedup_vs_numpy": t_np / t_fast,
        "median_bit_identical_vs_numpy": same_bits(fast_med.numpy(), np_med),
        # against the definition itself: the rule's own median may be its second pass over redundancy-group
        # leaders (rule v4), which is not the median of every row
        "median_bit_identical_vs_reference": same_bits(fast_med.numpy(), agg._reference_median(stack).numpy()),
        "rule_seconds": t_rule,
        "rule_speedup_vs_numpy_median": t_np / t_rule,
        "first_pass_seconds": t_first,
        "aggregate_seconds": t_agg,
        "weighted_first_pass_seconds": t_voted,
        "weighted_first_pass_vs_first_pass": t_voted / t_first,
        "weighted_median_bit_identical_vs_reference": same_bits(
            voted_med, agg._reference_weighted_median(stack, votes).numpy()),
        "reference_rule_seconds": t_ref,
        "rule_speedup_vs_reference": t_ref / t_rule,
        "rule_bit_identical_vs_reference": bool(same_rule),
        "speed_round_statuses": dict(Counter(s.name for s in verdicts.statuses)),
    }


def _save(path: Path, flat: np.ndarray) -> None:
    from safetensors.numpy import save_file

    save_file({"w": flat}, str(path))


def _write_round(directory: Path, n: int, d: int, seed: int) -> None:
    """The base model (zeros) and n update files, one at a time (memory: one update)."""
    directory.mkdir(parents=True, exist_ok=True)
    _save(directory / "base.safetensors", np.zeros(d, dtype=np.float32))
    direction = np.random.default_rng(seed).standard_normal(d, dtype=np.float32)
    for i in range(n):
        _save(directory / f"{i:06d}.safetensors", _one_update(direction, i, d, seed))


def _participant(i: int) -> str:
    return f"0x{(i * 2654435761) % 2**160:040x}"


def _outcome_digest(outcome: Any) -> dict[str, Any]:
    from trainer.serialization import serialize

    verdicts = [
        [v.participant, int(v.status), v.score, v.cosine.hex() if v.cosine is not None else None,
         v.norm_ratio.hex() if v.norm_ratio is not None else None]
        for v in outcome.verdicts
    ]
    model = hashlib.sha256(serialize(outcome.new_params)).hexdigest()
    return {
        "model_sha256": model,
        "verdicts_sha256": hashlib.sha256(json.dumps(verdicts).encode()).hexdigest(),
        "statuses": dict(Counter(v.status.name for v in outcome.verdicts)),
    }


def _stream_vs_memory(directory: Path, n: int, d: int, seed: int) -> dict[str, Any]:
    """evaluate_round on bytes vs evaluate_round_streamed on the same files, in a round after round 1 (a previous
    global step), with a sybil copy, a zero and a stale free-rider and invalid blobs mixed in."""
    import torch

    from trainer.aggregation import Submission, evaluate_round
    from trainer.rules import RuleConfig
    from trainer.streaming import BlobSubmission, evaluate_round_streamed

    _write_round(directory, n, d, seed)
    bad = np.ones(d, dtype=np.float32)
    bad[d // 2] = np.nan
    _save(directory / "nan.safetensors", bad)
    _save(directory / "short.safetensors", np.ones(max(1, d - 1), dtype=np.float32))
    (directory / "junk.safetensors").write_bytes(b"not a safetensors blob")
    step = np.float32(0.01) * np.random.default_rng([seed, 7]).standard_normal(d, dtype=np.float32)
    shutil.copyfile(directory / f"{min(1, n - 1):06d}.safetensors", directory / "copy.safetensors")
    _save(directory / "zero.safetensors", np.zeros(d, dtype=np.float32))
    _save(directory / "stale.safetensors", step)
    files = [(f"{i:06d}.safetensors", _participant(i)) for i in range(n)]
    extra = ("nan", "a"), ("short", "b"), ("junk", "c"), ("copy", "d"), ("zero", "e"), ("stale", "f")
    files += [(f"{name}.safetensors", "0x" + c * 40) for name, c in extra]
    base = {"w": torch.zeros(d, dtype=torch.float32)}
    previous = {"w": torch.from_numpy(-step)}  # base - previous == step exactly
    subs = [Submission(p, (directory / f).read_bytes()) for f, p in files]
    blobs = [BlobSubmission(p, directory / f) for f, p in files]
    rule = RuleConfig()
    t0 = time.perf_counter()
    in_memory = _outcome_digest(evaluate_round(base, subs, rule, previous))
    t_mem = time.perf_counter() - t0
    del subs
    t0 = time.perf_counter()
    streamed = _outcome_digest(evaluate_round_streamed(base, blobs, rule, previous))
    t_stream = time.perf_counter() - t0
    shutil.rmtree(directory, ignore_errors=True)
    return {
        "stream_vs_memory_n": n,
        "stream_vs_memory_d": d,
        "in_memory_round_seconds": t_mem,
        "streamed_round_seconds_small": t_stream,
        "stream_vs_memory_statuses": streamed["statuses"],
        "stream_vs_memory_bit_identical": in_memory == streamed,
    }


def _fit_to_disk(work: Path, n: int, d: int, report: dict[str, Any]) -> int:
    need = n * (4 * d + HEADER_BYTES)
    free = shutil.disk_usage(work).free
    report["stream_disk_free_gb"] = free / 1e9
    report["stream_disk_needed_gb"] = need / 1e9
    fit = n
    if need > free * 0.9:
        fit = max(1, int(free * 0.9 // (4 * d + HEADER_BYTES)))
        report["stream_n_reduced_from"] = n
        report["stream_n_reduced_reason"] = f"{need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free"
    report["stream_n"] = fit
    report["stream_d"] = d
    return fit


def _stream_big(console: Any, directory: Path, n: int, d: int) -> dict[str, Any]:
    runs = []
    for label, block_cols in (("default blocks", None), ("blocks of 8192 columns", 8192)):
        with console.status(f"streaming {n} x {d:,} in a child process ({label})"):
            runs.append(_run_child(directory, n, d, block_cols))
    first, second = runs
    return {
        "stream_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "stream_rss_after_imports_mb": first["rss_after_imports_mb"],
        "stream_seconds": first["seconds"],
        "stream_seconds_8192_blocks": second["seconds"],
        "stream_block_cols": first["block_cols"],
        "stream_peak_rss_mb_runs": [r["peak_rss_mb"] for r in runs],
        "stream_rusage_children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "stream_statuses": first["statuses"],
        "stream_model_sha256": first["model_sha256"],
        "stream_verdicts_sha256": first["verdicts_sha256"],
        "stream_runs_identical": first["model_sha256"] == second["model_sha256"]
        and first["verdicts_sha256"] == second["verdicts_sha256"],
    }


def _big_in_memory(directory: Path, n: int, d: int, report: dict[str, Any]) -> dict[str, Any]:
    """The streamed round again with every update in memory (``run_rule`` over ``StackSource``): the same outcome
    bit for bit? Skipped (None) when the stack would not fit comfortably in the available memory."""
    import torch
    from safetensors.numpy import load_file

    from trainer.aggregation import RoundOutcome, StackSource, run_rule, subset_seed, verdicts_of
    from trainer.rules import RuleConfig
    from trainer.streaming import file_sha256

    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if 4 * n * d * 2 > available:
        return {"stream_big_vs_memory_bit_identical": None,
                "stream_big_vs_memory_skipped": f"{4 * n * d / 1e9:.1f} GB stack, {available / 1e9:.1f} GB available"}
    order = sorted(range(n), key=lambda i: _participant(i).lower())  # the rule reads updates in address order
    t0 = time.perf_counter()
    u = np.empty((n, d), dtype=np.float32)
    hashes = []
    for row, i in enumerate(order):
        path = directory / f"{i:06d}.safetensors"
        u[row] = load_file(str(path))["w"]
        hashes.append(file_sha256(path))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    result, new = run_rule(StackSource(u), np.zeros(d, dtype=np.float32), RuleConfig(), None, subset_seed(hashes, d))
    t_rule = time.perf_counter() - t0
    del u
    outcome = RoundOutcome(verdicts_of([_participant(i) for i in order], result), {"w": torch.from_numpy(new)})
    digest = _outcome_digest(outcome)
    return {
        "stream_big_in_memory_load_seconds": t_load,
        "stream_big_in_memory_rule_seconds": t_rule,
        "stream_big_vs_memory_bit_identical": digest["model_sha256"] == report["stream_model_sha256"]
        and digest["verdicts_sha256"] == report["stream_verdicts_sha256"],
    }


def _run_child(directory: Path, n: int, d: int, block_cols: int | None) -> dict[str, Any]:
    spec = directory / f"child-{block_cols or 'default'}.json"
    spec.write_text(json.dumps({"dir": str(directory), "n": n, "d": d, "block_cols": block_cols}))
    cmd = [sys.executable, "-m", "fedledger.bench_aggregate", "--child", str(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"streaming child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(spec.with_suffix(".out.json").read_text())


def _vm_hwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(spec_path: Path) -> int:
    """One streamed aggregation of the round in spec['dir']; writes timings, peak RSS and the outcome's digest."""
    import torch

    from trainer.rules import RuleConfig
    from trainer.streaming import BlobSubmission, default_block_cols, evaluate_round_streamed

    spec = json.loads(spec_path.read_text())
    directory, n, d = Path(spec["dir"]), spec["n"], spec["d"]
    base = {"w": torch.zeros(d, dtype=torch.float32)}
    blobs = [BlobSubmission(_participant(i), directory / f"{i:06d}.safetensors") for i in range(n)]
    rss_imports = _vm_hwm_mb()
    t0 = time.perf_counter()
    outcome = evaluate_round_streamed(base, blobs, RuleConfig(), block_cols=spec["block_cols"])
    seconds = time.perf_counter() - t0
    peak = _vm_hwm_mb()
    block_cols = spec["block_cols"] or default_block_cols(n)
    out = {"seconds": seconds, "peak_rss_mb": peak, "rss_after_imports_mb": rss_imports, "block_cols": block_cols}
    out.update(_outcome_digest(outcome))
    spec_path.with_suffix(".out.json").write_text(json.dumps(out))
    return 0


def _print(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    s = r["sizes"]
    t = Table(title=f"aggregator speed, in memory: {s['n']} updates x {s['d']:,} float32 (best of {s['repeats']})",
              title_justify="left")
    t.add_column("what")
    t.add_column("seconds", justify="right")
    t.add_column("vs np.median", justify="right")
    t.add_column("bit-identical", justify="right")
    t.add_row("np.median(stack, axis=0)  (Flower FedMedian)", f"{r['np_median_seconds']:.3f}", "1.0x", "")
    t.add_row("coordinate_median", f"{r['fast_median_seconds']:.3f}", f"{r['median_speedup_vs_numpy']:.1f}x",
              f"{r['median_bit_identical_vs_numpy']} / ref {r['median_bit_identical_vs_reference']}")
    t.add_row("  first pass: median + exact norms and dot products", f"{r['first_pass_seconds']:.3f}",
              "", "")
    t.add_row("  aggregate", f"{r['aggregate_seconds']:.3f}", "", "")
    t.add_row(f"  first pass with stakes as votes (rule v7): {r['weighted_first_pass_vs_first_pass']:.1f}x the "
              "first pass",
              f"{r['weighted_first_pass_seconds']:.3f}", "",
              f"ref {r['weighted_median_bit_identical_vs_reference']}")
    t.add_row("whole rule (run_rule): + free-riders, copies, scores, decisions", f"{r['rule_seconds']:.3f}",
              f"{r['rule_speedup_vs_numpy_median']:.1f}x", str(r["rule_bit_identical_vs_reference"]))
    t.add_row("whole rule, original definitions (ReferenceSource)", f"{r['reference_rule_seconds']:.3f}",
              f"{r['np_median_seconds'] / r['reference_rule_seconds']:.2f}x", "")
    console.print(t)
    st = Table(
        title=f"streamed aggregation: {r['stream_n']} updates x {r['stream_d']:,} float32 from safetensors files",
        title_justify="left",
    )
    st.add_column("what")
    st.add_column("value", justify="right")
    if "stream_n_reduced_from" in r:
        st.add_row("reduced from", f"{r['stream_n_reduced_from']} ({r['stream_n_reduced_reason']})")
    st.add_row("peak RSS of the streaming process", f"{r['stream_peak_rss_mb']:.0f} MB")
    st.add_row("  of which after imports (torch, numpy)", f"{r['stream_rss_after_imports_mb']:.0f} MB")
    st.add_row("time (validate + 2 passes)", f"{r['stream_seconds']:.1f} s")
    st.add_row("time with blocks of 8192 columns", f"{r['stream_seconds_8192_blocks']:.1f} s")
    st.add_row("writing the files", f"{r['stream_generate_seconds']:.1f} s")
    st.add_row("statuses", ", ".join(f"{k} {v}" for k, v in sorted(r["stream_statuses"].items())))
    st.add_row("two block sizes give the same outcome", str(r["stream_runs_identical"]))
    big = r.get("stream_big_vs_memory_bit_identical")
    st.add_row("streamed == the same round in memory (run_rule over the whole stack)",
               str(big) if big is not None else f"not compared: {r.get('stream_big_vs_memory_skipped')}")
    st.add_row(f"streamed == in memory ({r['stream_vs_memory_n']} x {r['stream_vs_memory_d']:,}, + 3 invalid, "
               "a copy, 2 free-riders)",
               str(r["stream_vs_memory_bit_identical"]))
    console.print(st)
    console.print(
        f"median_speedup_vs_numpy {r['median_speedup_vs_numpy']:.1f}, "
        f"rule_speedup_vs_numpy_median {r['rule_speedup_vs_numpy_median']:.1f}, bit_identical {r['bit_identical']}, "
        f"stream_peak_rss_mb {r['stream_peak_rss_mb']:.0f}, stream_bit_identical {r['stream_bit_identical']}"
    )


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="fedledger bench aggregate")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
