"""What a fixed number of local SGD steps per round does to accuracy and to honest participants' rejections.

For each setting of ``--local-steps`` (S steps, or ``epochs``: 2 epochs of each participant's data, the default) it
runs the robustness bench with no attack (digits and breast cancer, Dirichlet 0.5, n = 20 and 50, seeds 0-2, 20
rounds, clean FedAvg and the platform's rule) and tabulates final accuracy and the share of honest updates the rule
rejected (each rejection burns 10 % of a stake) and of honest participants starved (paid < 10 % of the mean). A
results JSON already in ``--json-dir`` for a setting is read instead of run again.

    .venv/bin/python scripts/local_steps_tradeoff.py --local-steps epochs 2 3 4 6 8 \\
        --json-dir docs/robustness/v5/local_steps --out docs/robustness/v5/local_steps/table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedledger.cli import main as fedledger  # noqa: E402
from trainer.local import LocalConfig, add_local_steps_argument  # noqa: E402

SETTINGS = [("digits", 20), ("digits", 50), ("breast_cancer", 20), ("breast_cancer", 50)]


def results(steps: int | str | None, json_dir: Path, workers: int) -> dict:
    path = json_dir / f"{'epochs' if steps is None else str(steps).replace(':', '_max')}.json"
    if not path.exists():
        rc = fedledger(["bench", "robustness", "--datasets", "digits", "breast_cancer", "--partitions", "dir0.5",
                        "--participants", "20", "50", "--fractions", "0.1", "--seeds", "0", "1", "2", "--attacks",
                        "none", "--defenses", "fedavg", "platform", "--local-steps",
                        "epochs" if steps is None else str(steps), "--workers", str(workers), "--json", str(path)])
        if rc != 0:
            raise SystemExit(f"the bench failed for --local-steps {steps}")
    return json.loads(path.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_local_steps_argument(p, nargs="+")
    p.add_argument("--json-dir", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    args.json_dir.mkdir(parents=True, exist_ok=True)
    head = " | ".join(f"{d.replace('_', ' ')} n={n}" for d, n in SETTINGS)
    lines = [
        "# Fixed local steps: accuracy and honest rejections",
        "",
        f"`.venv/bin/python scripts/local_steps_tradeoff.py --local-steps "
        f"{' '.join('epochs' if s is None else str(s) for s in args.local_steps)}` (no attack, Dirichlet 0.5, seeds "
        "0-2, 20 rounds, rule version 5; per cell: clean FedAvg accuracy / the rule's accuracy, in %; honest updates "
        "rejected; honest participants starved).",
        "",
        f"| local training | {head} |",
        "|---|" + "---|" * len(SETTINGS),
    ]
    bench_seconds = 0.0
    for steps in args.local_steps:
        res = results(steps, args.json_dir, args.workers)
        bench_seconds += res["config"]["wall_seconds"]
        acc: dict[tuple, list[float]] = defaultdict(list)
        rejected: dict[tuple, list[float]] = defaultdict(list)
        starved: dict[tuple, list[float]] = defaultdict(list)
        for c in res["cells"]:
            key = (c["dataset"], c["n"])
            acc[(*key, c["defense"])].append(c["final_accuracy"])
            if c["defense"] == "platform":
                rejected[key].append(c["honest_rejection_rate"])
                starved[key].append(c["honest_starved_share"])
        label = LocalConfig.from_option(steps).label()
        cells = [f"{100 * statistics.mean(acc[(*k, 'fedavg')]):.1f} / {100 * statistics.mean(acc[(*k, 'platform')]):.1f}; "
                 f"{100 * statistics.mean(rejected[k]):.1f} % rejected; {100 * statistics.mean(starved[k]):.1f} % starved"
                 for k in SETTINGS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines.insert(3, f"The bench runs took {bench_seconds:.0f} s ({args.workers} workers; a setting whose JSON was "
                    f"already in {args.json_dir} is read, not run).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
