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
    fused_rows = [
        (row, mode)
        for row in result["measurements"]
        for mode in ("counter", "predrawn")
        if f"fused-{mode}" in row
    ]
    if fused_rows:
        lines += [
            "",
            "Fused backend (one Pallas kernel per block of chains):",
            "",
            "| case | chains | steps | rng | samples/s | vs BlackJAX | vs ours (scan) "
            "| acceptance fused / BlackJAX (z) | compile s | bandwidth | FP32 peak (est.) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row, mode in fused_rows:
            lib = f"fused-{mode}"
            fused, roof = row[lib], row[f"{lib}_roofline"]
            vs_bj, vs_ours = row[f"{lib}_vs_blackjax"], row[f"{lib}_vs_ours"]
            bw, fp = roof["bandwidth_fraction"], roof["fp32_peak_fraction"]
            lines.append(
                f"| {row['case']} | {row['num_chains']:,} | {row['num_steps']} | {mode} "
                f"| {fused['samples_per_s']:.3g} | {vs_bj['samples_per_s_ratio']:.2f}× "
                f"| {vs_ours['samples_per_s_ratio']:.2f}× "
                f"| {fused['acceptance']:.3f} / {row['blackjax']['acceptance']:.3f} "
                f"({vs_bj['acceptance_z']:+.1f}) | {fused['compile_s']:.1f} "
                f"| {'-' if bw is None else f'{100 * bw:.1f}%'} "
                f"| {'-' if fp is None else f'{100 * fp:.1f}%'} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(format_table(json.load(f)))
