"""Training throughput of the MNIST DDPM U-Net: dgm_jax under ``jax.jit`` against a PyTorch twin.

Both sides train the same network on the same task: the U-Net of
:data:`dgm_jax.nn.UNET_MNIST_5M` (widths 64/128/128, two residual blocks per level,
attention at 7×7; 6,469,889 parameters) predicting the noise of a DDPM (linear β over
1,000 steps) on 28×28×1 images, one Adam step per batch. The PyTorch twin below mirrors
the Flax module layer by layer (GroupNorm with ``gcd(width, 32)`` groups and ε = 1e-6,
3×3 convolutions, a 1×1 skip projection, the time-embedding MLP, single-head attention
with biased q/k/v/out projections, stride-2 convolutions down and nearest-neighbour
up-sampling followed by a 3×3 convolution); the script checks and prints that both
have the same parameter count and refuses to compare otherwise.

* **ours**: ``dgm_jax.train.make_step`` over ``dgm_jax.diffusion.ddpm_loss`` (jit, the
  state donated); ``--bf16`` builds ``UNet(dtype=jnp.bfloat16)``: parameters and Adam
  stay float32, activations and matmuls/convolutions run in bfloat16.
* **torch**: eager, or ``torch.compile`` (default on GPU; ``--torch-compile`` forces it
  on CPU); ``--bf16`` wraps the forward pass in ``torch.autocast(..., torch.bfloat16)``.

Each framework runs in its own subprocess on the same device (so neither allocator nor
thread pool disturbs the other), the batch is a fixed random tensor already on the
device (input pipelines are not measured), and the timing is the best of ``--repeats``
windows of ``--steps`` steps after ``--warmup`` steps, each window ended by a device
synchronisation. Images/s = batch × steps / window time.

Model FLOP utilisation (GPU only): the FLOPs of one compiled training step from XLA's
cost analysis of *our* step (the same arithmetic as the twin's), times steps per second,
over the device's dense peak (H100/H200 SXM: 989 TFLOP/s bf16, 494 TFLOP/s TF32, which
XLA uses for float32 convolutions and matmuls by default). The FLOP count is printed on
CPU too. Results go to ``benchmarks/results/train_throughput-<device>-<date>.json``.

torch is optional (``pip install -e ".[torch]"``); without it the script prints a JSON
line saying so and measures ours alone.

Usage::

    python benchmarks/train_throughput/run.py                    # GPU: batch 256, fp32 and bf16
    python benchmarks/train_throughput/run.py --quick            # CPU check: batch 8, 3 steps
    python benchmarks/train_throughput/run.py --precision bf16 --batch-size 512
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
ROOT = Path(__file__).resolve().parents[2]

# Dense peak FLOP/s by device kind substring: (bf16, tf32/fp32 as XLA runs float32).
PEAK_FLOPS = {
    "H100": (989e12, 494e12),
    "H200": (989e12, 494e12),
    "A100": (312e12, 156e12),
}


def _emit(obj) -> None:
    print(json.dumps(obj), flush=True)


# ----------------------------------------------------------------------------------------
# ours
# ----------------------------------------------------------------------------------------


def worker_jax(args) -> dict:
    """Time our jit-compiled training step; returns a result record."""
    import jax
    import jax.numpy as jnp
    import optax

    from dgm_jax import diffusion, train
    from dgm_jax.nn import UNet

    device = jax.devices()[0]
    bf16 = args.precision == "bf16"
    net = UNet(
        channels=tuple(args.channels),
        num_res_blocks=args.num_res_blocks,
        attention_resolutions=tuple(args.attention),
        dtype=jnp.bfloat16 if bf16 else jnp.float32,
    )
    schedule = diffusion.linear_schedule(1000)
    x0 = jax.random.uniform(jax.random.key(1), (args.batch_size, 28, 28, 1), minval=-1, maxval=1)
    # Flax's default initial distributions, drawn without net.init (slow to compile on CPU).
    from experiments.mnist_diffusion import init_params

    params = init_params(jax.random.key(0), net, x0[:1], jnp.zeros(1))
    num_params = int(sum(p.size for p in jax.tree.leaves(params)))

    def loss_fn(params, key, batch):
        return diffusion.ddpm_loss(lambda x, t: net.apply(params, x, t), schedule, key, batch)

    optimizer = optax.adam(2e-4)
    step = train.make_step(loss_fn, optimizer)
    state = train.init_train_state(params, optimizer)
    key = jax.random.key(2)

    flops = None
    try:
        lowered = jax.jit(step).lower(state, key, x0)
        cost = lowered.compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception as err:  # cost analysis is best effort
        _emit({"framework": "jax", "warning": f"cost analysis failed: {err}"})

    tic = time.perf_counter()
    state, metrics = step(state, key, x0)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - tic
    for i in range(args.warmup):
        state, metrics = step(state, jax.random.fold_in(key, i), x0)
    jax.block_until_ready(state.params)
    windows = []
    for r in range(args.repeats):
        tic = time.perf_counter()
        for i in range(args.steps):
            state, metrics = step(state, jax.random.fold_in(key, 1000 * r + i), x0)
        jax.block_until_ready((state.params, metrics["loss"]))
        windows.append(time.perf_counter() - tic)
    best = min(windows)
    record = {
        "framework": "jax",
        "mode": "jit",
        "precision": args.precision,
        "device": device.device_kind,
        "platform": device.platform,
        "num_params": num_params,
        "batch_size": args.batch_size,
        "images_per_s": args.batch_size * args.steps / best,
        "step_ms": 1e3 * best / args.steps,
        "window_s": windows,
        "compile_s": compile_s,
        "final_loss": float(metrics["loss"]),
        "flops_per_step": flops,
        "versions": {"jax": jax.__version__, "jaxlib": importlib.metadata.version("jaxlib")},
    }
    if flops and device.platform == "gpu":
        peaks = next((v for k, v in PEAK_FLOPS.items() if k in device.device_kind), None)
        if peaks:
            peak = peaks[0] if bf16 else peaks[1]
            record["peak_flops"] = peak
            record["mfu"] = flops * args.steps / best / peak
    return record


# ----------------------------------------------------------------------------------------
# the PyTorch twin
# ----------------------------------------------------------------------------------------


def build_torch_unet(channels, num_res_blocks, attention_resolutions, num_heads=1):
    """The PyTorch twin of ``dgm_jax.nn.UNet`` (unconditional, NCHW)."""
    import torch
    from torch import nn

    def norm(c):
        return nn.GroupNorm(math.gcd(c, 32), c, eps=1e-6)

    class ResBlock(nn.Module):
        def __init__(self, cin, cout, emb_dim):
            super().__init__()
            self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.emb = nn.Linear(emb_dim, cout)
            self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, emb):
            h = self.conv1(nn.functional.silu(self.norm1(x)))
            h = h + self.emb(nn.functional.silu(emb))[:, :, None, None]
            h = self.conv2(nn.functional.silu(self.norm2(h)))
            return self.skip(x) + h

    class Attention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = norm(c)
            self.attn = nn.MultiheadAttention(c, num_heads, batch_first=True)

        def forward(self, x):
            b, c, hgt, wid = x.shape
            h = self.norm(x).flatten(2).transpose(1, 2)  # (b, hw, c)
            h, _ = self.attn(h, h, h, need_weights=False)
            return x + h.transpose(1, 2).reshape(b, c, hgt, wid)

    class UNetTwin(nn.Module):
        def __init__(self):
            super().__init__()
            ch0 = channels[0]
            self.emb_in = ch0 + ch0 % 2
            emb_dim = 4 * ch0
            self.time = nn.Sequential(
                nn.Linear(self.emb_in, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
            )
            self.conv_in = nn.Conv2d(1, ch0, 3, padding=1)
            self.down, skips, size, c = nn.ModuleList(), [ch0], 28, ch0
            for level, width in enumerate(channels):
                for _ in range(num_res_blocks):
                    attn = Attention(width) if size in attention_resolutions else None
                    self.down.append(nn.ModuleList([ResBlock(c, width, emb_dim), attn]))
                    c = width
                    skips.append(c)
                if level < len(channels) - 1:
                    self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                    skips.append(c)
                    size //= 2
            self.mid = nn.ModuleList(
                [ResBlock(c, c, emb_dim), Attention(c), ResBlock(c, c, emb_dim)]
            )
            self.up = nn.ModuleList()
            for level, width in reversed(list(enumerate(channels))):
                for _ in range(num_res_blocks + 1):
                    attn = Attention(width) if size in attention_resolutions else None
                    self.up.append(nn.ModuleList([ResBlock(c + skips.pop(), width, emb_dim), attn]))
                    c = width
                if level > 0:
                    self.up.append(nn.Conv2d(c, c, 3, padding=1))
                    size *= 2
            self.norm_out, self.conv_out = norm(c), nn.Conv2d(c, 1, 3, padding=1)

        def forward(self, x, t):
            half = self.emb_in // 2
            freqs = torch.exp(
                -math.log(10_000.0)
                * torch.arange(half, device=x.device, dtype=torch.float32)
                / half
            )
            angles = t.float()[:, None] * freqs[None, :]
            emb = self.time(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))
            h = self.conv_in(x)
            skips = [h]
            for layer in self.down:
                if isinstance(layer, nn.ModuleList):
                    h = layer[0](h, emb)
                    if layer[1] is not None:
                        h = layer[1](h)
                else:
                    h = layer(h)
                skips.append(h)
            h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
            for layer in self.up:
                if isinstance(layer, nn.ModuleList):
                    h = layer[0](torch.cat([h, skips.pop()], dim=1), emb)
                    if layer[1] is not None:
                        h = layer[1](h)
                else:
                    h = layer(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
            return self.conv_out(nn.functional.silu(self.norm_out(h)))

    return UNetTwin()


def worker_torch(args) -> dict:
    """Time the PyTorch twin's training step; returns a result record."""
    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_torch_unet(args.channels, args.num_res_blocks, args.attention).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    betas = torch.linspace(1e-4, 0.02, 1000, device=device)
    alpha_bars = torch.cumprod(1.0 - betas, 0)
    x0 = torch.rand(args.batch_size, 1, 28, 28, device=device) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    use_compile = args.torch_compile if args.torch_compile is not None else cuda
    forward = torch.compile(model) if use_compile else model
    bf16 = args.precision == "bf16"

    def step():
        t = torch.randint(0, 1000, (args.batch_size,), device=device)
        noise = torch.randn_like(x0)
        ab = alpha_bars[t][:, None, None, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(x_t, t)
        loss = torch.mean((out.float() - noise) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    tic = time.perf_counter()
    loss = step()
    sync()
    compile_s = time.perf_counter() - tic
    for _ in range(args.warmup):
        loss = step()
    sync()
    windows = []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        sync()
        windows.append(time.perf_counter() - tic)
    best = min(windows)
    return {
        "framework": "torch",
        "mode": "compile" if use_compile else "eager",
        "precision": args.precision,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "platform": "gpu" if cuda else "cpu",
        "num_params": num_params,
        "batch_size": args.batch_size,
        "images_per_s": args.batch_size * args.steps / best,
        "step_ms": 1e3 * best / args.steps,
        "window_s": windows,
        "compile_s": compile_s,
        "final_loss": float(loss),
        "versions": {"torch": torch.__version__},
    }


# ----------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be non-negative integers, got {text}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=_positive_int, default=None, help="default 256")
    parser.add_argument("--steps", type=_positive_int, default=None, help="timed steps/window")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps after compile")
    parser.add_argument("--repeats", type=_positive_int, default=3, help="timed windows")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "both"),
        default="both",
        help="fp32, bf16 (ours: UNet(dtype=bfloat16); torch: autocast) or both",
    )
    parser.add_argument("--channels", type=_int_list, default=[64, 128, 128])
    parser.add_argument("--num-res-blocks", type=_positive_int, default=2)
    parser.add_argument("--attention", type=_int_list, default=[7], help="attention sizes")
    parser.add_argument("--frameworks", default="jax,torch", help="comma list of jax,torch")
    parser.add_argument(
        "--torch-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the twin (default: on GPU only)",
    )
    parser.add_argument("--quick", action="store_true", help="CPU check: batch 8, 3 steps")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: results/)")
    parser.add_argument("--worker", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 8 if args.quick else 256
    if args.steps is None:
        args.steps = 3 if args.quick else 50
    if args.warmup is None:
        args.warmup = 1 if args.quick else 5
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if not args.channels or 28 % 2 ** (len(args.channels) - 1):
        parser.error(f"--channels: 28 must be divisible by 2**(levels - 1), got {args.channels}")
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if not frameworks or any(f not in ("jax", "torch") for f in frameworks):
        parser.error(f"--frameworks must be a comma list of jax and torch, got {args.frameworks}")
    args.frameworks = frameworks
    return args


def _worker_argv(args, framework: str, precision: str) -> list[str]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--precision",
        precision,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--channels",
        ",".join(map(str, args.channels)),
        "--num-res-blocks",
        str(args.num_res_blocks),
        "--attention",
        ",".join(map(str, args.attention)) or "",
    ]
    if args.torch_compile is not None:
        argv.append("--torch-compile" if args.torch_compile else "--no-torch-compile")
    return argv


def _run_worker(args, framework: str, precision: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        _worker_argv(args, framework, precision), capture_output=True, text=True, env=env
    )
    records = []
    for line in proc.stdout.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    result = next((r for r in reversed(records) if "images_per_s" in r), None)
    if proc.returncode != 0 or result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"framework": framework, "precision": precision, "error": " | ".join(tail)}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        _emit(worker_jax(args) if args.worker == "jax" else worker_torch(args))
        return 0

    has_torch = importlib.util.find_spec("torch") is not None
    frameworks = list(args.frameworks)
    if "torch" in frameworks and not has_torch:
        _emit(
            {
                "framework": "torch",
                "status": "missing",
                "message": "torch is not installed: pip install -e '.[torch]' for the twin",
            }
        )
        frameworks.remove("torch")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]

    results = []
    for precision in precisions:
        for framework in frameworks:
            record = _run_worker(args, framework, precision)
            _emit(record)
            results.append(record)

    # Same architecture on both sides: the parameter counts must agree.
    counts = {r["framework"]: r["num_params"] for r in results if "num_params" in r}
    if len(set(counts.values())) > 1:
        _emit({"error": "parameter counts differ; not comparing", "num_params": counts})
        return 1
    if counts:
        _emit({"num_params": counts, "same_parameter_count": len(set(counts.values())) == 1})

    ratios = {}
    for precision in precisions:
        by = {
            r["framework"]: r
            for r in results
            if r.get("precision") == precision and "images_per_s" in r
        }
        if "jax" in by and "torch" in by:
            key = f"{precision}/jax_over_torch_{by['torch']['mode']}"
            ratios[key] = by["jax"]["images_per_s"] / by["torch"]["images_per_s"]
    if ratios:
        _emit({"ratios": ratios})

    ok = [r for r in results if "images_per_s" in r]
    device_kind = ok[0]["device"] if ok else "unknown"
    platform_name = ok[0]["platform"] if ok else "unknown"
    slug = "cpu" if platform_name == "cpu" else device_kind.lower().replace(" ", "-")
    date = datetime.date.today().isoformat()
    versions = {"python": platform.python_version()}
    for r in ok:
        versions.update(r.get("versions", {}))
    report = {
        "benchmark": "train_throughput",
        "date": date,
        "device": {
            "platform": platform_name,
            "device_kind": device_kind,
            "host": platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "versions": versions,
        "settings": {
            "model": {
                "channels": args.channels,
                "num_res_blocks": args.num_res_blocks,
                "attention_resolutions": args.attention,
            },
            "batch_size": args.batch_size,
            "steps_per_window": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "task": "DDPM eps-prediction MSE (linear beta, T=1000), Adam 2e-4, fixed random batch",
            "timing": "best window; each window ends with a device synchronisation",
            "torch_present": has_torch,
        },
        "results": results,
        "ratios": ratios,
    }
    out = args.out or RESULTS / f"train_throughput-{slug}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _emit({"written": str(out)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
