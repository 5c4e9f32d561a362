"""Inference speed: onnxruntime versus the NumPy interpreter (and PyTorch when installed).

The network is the classic MNIST 784-128-64-10 ReLU net (specs' FullyConnectedNet),
with PyTorch's default initialization from `interpreter.init_params`; weights do
not change the cost of a dense forward pass.  Measured:

- batch-1 latency (microseconds per call: what a service answering one request pays),
- batch-64 and batch-10000 throughput (samples per second).

Engines are timed in alternating rounds inside one process (round r runs every
engine once, in a rotated order), so a slow spell of the machine hits all of them
alike; each figure is the median over rounds.  Outputs are checked against each
other before timing: a fast wrong answer is not a result.

    python benchmarks/inference_speed.py                 # print the markdown table
    python benchmarks/inference_speed.py --write docs/performance.md

`--write` replaces only the section between `<!-- inference:begin -->` and
`<!-- inference:end -->` (other benchmarks own other sections of that file).

`--predict` measures the command instead, end to end: `fcspec predict` against
benchmarks/plain_predict.py (a plain onnxruntime script doing the same load, infer,
write) on MNIST's 10,000 test images, each run as a fresh process, the two
alternating for `--rounds` rounds; it reports medians and their ratio, and with
`--write` replaces the section between `<!-- predict:begin -->` and `<!-- predict:end -->`.

    python benchmarks/inference_speed.py --predict --rounds 11 --write docs/performance.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path


def _pin_blas_threads(argv: list[str]) -> None:
    # NumPy's BLAS reads its thread count when NumPy is first imported, so the
    # --threads setting has to reach the environment before `import numpy`;
    # otherwise NumPy would run on every core while the others run on one.
    threads = "1"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif a.startswith("--threads="):
            threads = a.split("=", 1)[1]
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)


if __name__ == "__main__":
    _pin_blas_threads(sys.argv[1:])

import numpy as np  # noqa: E402  (after the thread pinning above)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported
from common import machine_line, replace_section, user_env  # noqa: E402

from fcspec import interpreter, ir, onnx_export, runtime  # noqa: E402

BEGIN = "<!-- inference:begin -->"
END = "<!-- inference:end -->"
PREDICT_BEGIN = "<!-- predict:begin -->"
PREDICT_END = "<!-- predict:end -->"
LIBRARIES = {"onnxruntime": "onnxruntime", "torch": "torch"}  # versions in the Machine line


def mnist_spec() -> ir.Spec:
    """The 784-128-64-10 network as the checker resolves it (no preprocessing: the
    benchmark measures the network, not a division by 255)."""

    def linear(name: str, n_in: int, n_out: int) -> ir.Layer:
        return ir.Layer(
            name,
            "linear",
            {"units": n_out, "bias": True, "init": "default"},
            (n_in,),
            (n_out,),
            {"weight": (n_out, n_in), "bias": (n_out,)},
        )

    def act(name: str, n: int) -> ir.Layer:
        return ir.Layer(name, "relu", {}, (n,), (n,), {})

    layers = (
        ir.Layer("flatten_1", "flatten", {}, (1, 28, 28), (784,), {}),
        linear("fc1", 784, 128),
        act("relu_1", 128),
        linear("fc2", 128, 64),
        act("relu_2", 64),
        linear("fc3", 64, 10),
    )
    model = ir.Model("FullyConnectedNet", (1, 28, 28), layers)
    return ir.Spec(
        name="FullyConnectedNet",
        path="<benchmark>",
        sha256="0" * 64,
        task="classification",
        model=model,
        loss=ir.Loss("cross_entropy", {"reduction": "mean"}),
        optimizer=ir.Optimizer("sgd", {"lr": 0.01}),
        schedule=ir.Schedule("constant", {}),
        regularize=ir.Regularize(),
        data=None,
        train=ir.Train(),
    )


def engines(spec: ir.Spec, params: dict[str, np.ndarray], threads: int):
    """name -> function(x) -> output, for every engine available here."""
    import onnxruntime as ort

    net = interpreter.Network(spec.model, params)
    model = onnx_export.export(spec, params)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = {
        "numpy": lambda x: net.predict(x),
        "onnxruntime": lambda x: sess.run(None, {"input": x})[0],
    }
    try:
        import torch
    except ImportError:
        return out
    torch.set_num_threads(threads)
    seq = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    ).eval()
    with torch.no_grad():
        for i, name in ((1, "fc1"), (3, "fc2"), (5, "fc3")):
            seq[i].weight.copy_(torch.from_numpy(params[f"{name}.weight"]))
            seq[i].bias.copy_(torch.from_numpy(params[f"{name}.bias"]))

    def run_torch(x):
        with torch.inference_mode():
            return seq(torch.from_numpy(x)).numpy()

    out["torch"] = run_torch
    return out


def time_block(fn, x: np.ndarray, calls: int) -> float:
    """Seconds per call over `calls` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - t0) / calls


def measure(runs: dict, cases: list[tuple[str, int, int]], rounds: int, rng) -> dict:
    """{case: {engine: [seconds per call, one per round]}}."""
    names = list(runs)
    results: dict[str, dict[str, list[float]]] = {}
    for case, batch, calls in cases:
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        ref = runs["numpy"](x)
        for name, fn in runs.items():  # agreement first, and a warm-up
            got = fn(x)
            err = np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref)))
            if err > runtime.TOLERANCE:
                sys.exit(f"{name} disagrees with numpy at batch {batch}: {err:.3g}")
            time_block(fn, x, max(1, calls // 4))
        results[case] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                results[case][name].append(time_block(runs[name], x, calls))
    return results


def table(results: dict, cases: list[tuple[str, int, int]], names: list[str]) -> str:
    head = (
        "| case | "
        + " | ".join(names)
        + " | onnxruntime speed-up over numpy |"
        + (" onnxruntime speed-up over torch |" if "torch" in names else "")
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for case, batch, _ in cases:
        med = {n: statistics.median(results[case][n]) for n in names}
        if batch == 1:
            cells = [f"{med[n] * 1e6:,.1f} µs" for n in names]
        else:
            cells = [f"{batch / med[n]:,.0f} samples/s" for n in names]
        row = f"| {case} | " + " | ".join(cells) + f" | {med['numpy'] / med['onnxruntime']:.2f}x |"
        if "torch" in names:
            row += f" {med['torch'] / med['onnxruntime']:.2f}x |"
        lines.append(row)
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace this benchmark's section of the doc (between its markers)."""
    replace_section(path, body, BEGIN, END)


def mnist_files() -> tuple[Path, Path]:
    """MNIST's test images and labels (IDX, gzipped), found or downloaded as fcspec does."""
    from fcspec import mnist

    return mnist.mnist_files("test")


def predict_commands(folder: Path, images: Path, labels: Path) -> dict[str, list[str]]:
    """The two commands timed side by side, on the same model and the same file."""
    model = folder / "mnist.onnx"
    if not model.exists():
        spec = mnist_spec()
        params = interpreter.init_params(spec.model, np.random.default_rng([0, 1]))
        params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        onnx_export.save(onnx_export.export(spec, params), model)
    script = Path(sys.executable).parent / "fcspec"  # the console script pip installed
    fcspec = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from fcspec.cli import main; sys.exit(main())"]
    )
    plain = [sys.executable, str(Path(__file__).resolve().parent / "plain_predict.py")]
    return {
        "fcspec predict": fcspec
        + ["predict", str(model), str(images), "--labels", str(labels)]
        + ["--output", str(folder / "fcspec.npz")],
        "plain onnxruntime": plain
        + [str(model), str(images), str(labels), str(folder / "plain.npz")],
    }


def measure_predict(commands: dict[str, list[str]], rounds: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each command per round, the order alternating by round."""
    import subprocess

    env = user_env()  # with the bytecode cache, as a user's install runs
    names = list(commands)
    for name in names:  # a warm-up (the file and bytecode caches), and a check that both succeed
        subprocess.run(commands[name], check=True, capture_output=True, env=env)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            subprocess.run(commands[name], check=True, capture_output=True, env=env)
            times[name].append(time.perf_counter() - t0)
    return times


def predict_section(times: dict[str, list[float]], rounds: int, cmd: str, load_start) -> str:
    med = {n: statistics.median(v) for n, v in times.items()}
    fc, plain = med["fcspec predict"], med["plain onnxruntime"]
    ratios = [
        a / b for a, b in zip(times["fcspec predict"], times["plain onnxruntime"], strict=True)
    ]
    lines = [
        "## predict versus a plain onnxruntime script",
        "",
        "`fcspec predict` on MNIST's 10,000 test images (IDX, gzipped; labels for the accuracy; "
        "outputs and classes written to .npz) against benchmarks/plain_predict.py doing the same "
        f"load, infer and write, each a fresh process, alternating for {rounds} rounds "
        f"({date.today().isoformat()}). Wall-clock seconds, including Python's start-up.",
        "",
        "| command | median | min | max |",
        "|---|---|---|---|",
    ]
    for n, v in times.items():
        lines.append(f"| {n} | {med[n]:.3f} s | {min(v):.3f} s | {max(v):.3f} s |")
    lines += [
        "",
        f"Ratio of the medians: **{fc / plain:.2f}x** (median of the per-round ratios "
        f"{statistics.median(ratios):.2f}x; goal: within 1.3x).",
        "",
        f"Machine: {machine_line(1, LIBRARIES, load_start)}.",
        "",
        f"Reproduce: `{cmd.strip()}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds (median over them)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per engine: onnxruntime intra-op, torch, and NumPy's BLAS (via "
        "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS unless already set)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer calls per block (a smoke run)")
    ap.add_argument(
        "--write", type=Path, help="replace the inference section of this markdown file"
    )
    ap.add_argument(
        "--predict",
        action="store_true",
        help="time `fcspec predict` against a plain onnxruntime script, end to end",
    )
    args = ap.parse_args(argv)
    cmd = "python benchmarks/inference_speed.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    if args.predict:
        import tempfile

        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        images, labels = mnist_files()
        with tempfile.TemporaryDirectory() as tmp:
            times = measure_predict(predict_commands(Path(tmp), images, labels), args.rounds)
        body = predict_section(times, args.rounds, cmd, load_start)
        print(body)
        if args.write:
            replace_section(args.write, body, PREDICT_BEGIN, PREDICT_END)
            print(f"\nwrote the predict section of {args.write}")
        return

    scale = 10 if args.quick else 1
    # (label, batch, calls per timed block): blocks of roughly 0.05-0.2 s each
    cases = [
        ("batch 1 latency", 1, 2000 // scale),
        ("batch 64 throughput", 64, 400 // scale),
        ("batch 10000 throughput", 10_000, max(1, 6 // scale)),
    ]
    rng = np.random.default_rng(args.seed)
    spec = mnist_spec()
    params = interpreter.init_params(spec.model, np.random.default_rng([args.seed, 1]))
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    runs = engines(spec, params, args.threads)
    results = measure(runs, cases, args.rounds, rng)
    names = list(runs)

    body = "\n".join(
        [
            "## Inference: onnxruntime versus the NumPy interpreter",
            "",
            f"MNIST 784-128-64-10 ReLU network, float32, medians of {args.rounds} alternating rounds "
            f"({date.today().isoformat()}). Latency is per call at batch 1; throughput is samples per "
            "second. Every engine's output is checked against NumPy's before timing.",
            "",
            table(results, cases, names),
            "",
            f"Machine: {machine_line(args.threads, LIBRARIES)}.",
            "",
            f"Reproduce: `{cmd.strip()}`",
        ]
    )
    print(body)
    if args.write:
        write_section(args.write, body)
        print(f"\nwrote the inference section of {args.write}")


if __name__ == "__main__":
    main()
