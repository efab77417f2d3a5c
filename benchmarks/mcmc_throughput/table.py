"""Print the results table of a recorded mcmc_throughput run as Markdown.

Example:
    python benchmarks/mcmc_throughput/table.py benchmarks/results/mcmc_throughput-cpu-DATE.json
"""

from __future__ import annotations

import json
import sys


def _ratio(row: dict, peer: str, field: str) -> str:
    ratios = row.get(f"vs_{peer}")
    return f"{ratios[field]:.2f}×" if ratios else "-"


def format_table(result: dict) -> str:
    """Markdown table, one line per (case, chains), from a results file's dict."""
    versions = result["versions"]
    device = result["device"]
    lines = [
        f"Device: {device['platform']} ({device['device_kind']}), jax {versions['jax']}, "
        f"blackjax {versions.get('blackjax', '-')}, numpyro {versions.get('numpyro', '-')}, "
        f"{result['date']}, quick={result['quick']}.",
        "",
        "| case | chains | steps | ours samples/s | ours grads/s | ours ESS/s "
        "| vs BlackJAX samples/s | grads/s | ESS/s | acceptance ours / BlackJAX (z) "
        "| compile s ours / BlackJAX | vs NumPyro samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["measurements"]:
        ours, peer = row["ours"], row["blackjax"]
        z = row["vs_blackjax"]["acceptance_z"]
        lines.append(
            f"| {row['case']} | {row['num_chains']:,} | {row['num_steps']} "
            f"| {ours['samples_per_s']:.3g} | {ours['grads_per_s']:.3g} | {ours['ess_per_s']:.3g} "
            f"| {_ratio(row, 'blackjax', 'samples_per_s_ratio')} "
            f"| {_ratio(row, 'blackjax', 'grads_per_s_ratio')} "
            f"| {_ratio(row, 'blackjax', 'ess_per_s_ratio')} "
            f"| {ours['acceptance']:.3f} / {peer['acceptance']:.3f} ({z:+.1f}) "
            f"| {ours['compile_s']:.1f} / {peer['compile_s']:.1f} "
            f"| {_ratio(row, 'numpyro', 'samples_per_s_ratio')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(format_table(json.load(f)))
