"""Which runtimes run which exports: every shipped spec, every opset fcspec writes.

Each spec in specs/ (random weights from the spec's own initialization, and
preprocessing statistics for the ones that normalize) is exported at every opset
from 17 to the newest the installed onnx knows, in three forms: plain,
`--probabilities` (classifiers) and `--fixed-batch 8`.  Every runtime installed
here runs every model on the same raw inputs (standard normals in preprocessed
units mapped back, as `fcspec verify` draws them), and its output is compared
with the NumPy interpreter: an element passes when
|runtime - numpy| <= 1e-5 * max(1, |numpy|), verify's tolerance.

Runtimes: onnxruntime and onnx.reference (fcspec's dependencies), OpenVINO
(`pip install openvino`) and tract (`pip install tract`) when installed; both
install from PyPI without torch.  A runtime that is missing is listed as such.

    python benchmarks/runtime_matrix.py                          # print the table
    python benchmarks/runtime_matrix.py --write docs/onnx.md     # its marked section
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, replace_section  # noqa: E402

from fcspec import check, data, interpreter, onnx_export, runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- runtimes:begin -->", "<!-- runtimes:end -->"
BATCH = 8


def _onnxruntime():
    import onnxruntime as ort

    def run(path: Path, x: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": x})[0]

    return f"onnxruntime {ort.__version__}", run


def _reference():
    import onnx
    from onnx.reference import ReferenceEvaluator

    def run(path: Path, x: np.ndarray) -> np.ndarray:
        return ReferenceEvaluator(str(path)).run(None, {"input": x})[0]

    return f"onnx.reference (onnx {onnx.__version__})", run


def _openvino():
    import openvino as ov

    core = ov.Core()

    def run(path: Path, x: np.ndarray) -> np.ndarray:
        # f32 explicitly: on CPUs with bf16/f16 units OpenVINO otherwise computes in those
        # (errors ~3e-3 here), a deliberate speed-for-precision trade, not an export error.
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.asarray(compiled([x])[0])

    return f"OpenVINO {ov.__version__.split('-')[0]}", run


def _tract():
    import tract

    def run(path: Path, x: np.ndarray) -> np.ndarray:
        model = tract.onnx().load(str(path)).into_model().into_runnable()
        return model.run([x])[0].to_numpy()

    return "tract", run


RUNTIMES = {
    "onnxruntime": _onnxruntime,
    "onnx.reference": _reference,
    "openvino": _openvino,
    "tract": _tract,
}


def _tract_version() -> str:
    try:
        from importlib.metadata import version

        return version("tract")
    except Exception:  # noqa: BLE001 - not installed
        return ""


def available() -> tuple[dict, list[str]]:
    found, missing = {}, []
    for key, make in RUNTIMES.items():
        try:
            label, run = make()
        except ImportError:
            missing.append(key)
            continue
        if key == "tract":
            label = f"tract {_tract_version()}"
        found[key] = (label, run)
    return found, missing


def models(spec_paths: list[Path], opsets: list[int]):
    """(spec name, variant, opset, spec, params, preprocess, kwargs) for every export."""
    for path in spec_paths:
        spec = check.load_spec(path)
        params = interpreter.init_params(spec.model, np.random.default_rng(0))
        params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        pre = None
        d = spec.data
        if d is not None and d.normalize != "none":
            rng = np.random.default_rng(1)
            shape = spec.model.input_shape
            pre = data.Preprocess(
                np.float32(d.scale),
                rng.standard_normal(shape).astype(np.float32),
                (rng.random(shape) + 0.5).astype(np.float32),
                d.normalize,
            )
        variants = [("plain", {}), (f"fixed batch {BATCH}", {"fixed_batch": BATCH})]
        if spec.task != "regression" and onnx_export.probabilities_note(spec) is None:
            variants.insert(1, ("probabilities", {"probabilities": True}))
        for variant, kwargs in variants:
            for opset in opsets:
                yield path.stem, variant, opset, spec, params, pre, kwargs


def measure(spec_paths: list[Path], opsets: list[int], found: dict, folder: Path):
    """[(runtime, spec, variant, opset, error or None, failure text or None)]."""
    rows = []
    for name, variant, opset, spec, params, pre, kwargs in models(spec_paths, opsets):
        model = onnx_export.export(spec, params, pre, opset=opset, **kwargs)
        path = onnx_export.save(model, folder / f"{name}-{opset}-{len(rows)}.onnx")
        prep = onnx_export.preprocessing(spec, pre)
        z = np.random.default_rng(opset).standard_normal((BATCH, *spec.model.input_shape))
        raw = ((z.astype(np.float32) * prep.divisor + prep.shift) * prep.scale).astype(np.float32)
        # The graph's Div, Sub, Div in float32 (data.Preprocess.apply_into's order).
        xin = ((raw / prep.scale - prep.shift) / prep.divisor).astype(np.float32)
        want = interpreter.Network(spec.model, params).predict(xin)
        if kwargs.get("probabilities"):
            want = runtime._np_probabilities(spec, want)
        for key, (_, run) in found.items():
            try:
                got = np.asarray(run(path, raw), np.float64).reshape(want.shape)
            except Exception as e:  # noqa: BLE001 - any runtime's refusal is a result
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                rows.append((key, name, variant, opset, None, text[:160]))
                continue
            err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)), initial=0))
            rows.append((key, name, variant, opset, err, None))
    return rows


def table(rows, found: dict, missing: list[str], opsets: list[int]) -> str:
    lines = [
        "| runtime | models run | within 1e-5 | largest error | opsets refused |",
        "|---|---|---|---|---|",
    ]
    for key, (label, _) in found.items():
        mine = [r for r in rows if r[0] == key]
        ran = [r for r in mine if r[4] is not None]
        ok = [r for r in ran if r[4] <= runtime.TOLERANCE]
        refused = sorted({r[3] for r in mine if r[4] is None})
        worst = max((r[4] for r in ran), default=float("nan"))
        lines.append(
            f"| {label} | {len(ran)} / {len(mine)} | {len(ok)} / {len(ran)} | {worst:.2g} | "
            + (", ".join(map(str, refused)) or "none")
            + " |"
        )
    for key in missing:
        lines.append(f"| {key} | not installed here | | | |")
    failures = [r for r in rows if r[4] is None or r[4] > runtime.TOLERANCE]
    if failures:
        lines += ["", "Failures (first of each runtime and opset):", ""]
        seen = set()
        for key, name, variant, opset, err, text in failures:
            if (key, opset) in seen:
                continue
            seen.add((key, opset))
            what = text if err is None else f"error {err:.3g}"
            lines.append(f"- {found[key][0]}, opset {opset}, {name} ({variant}): {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opsets", help="comma-separated opsets [default: all fcspec writes]")
    ap.add_argument("--specs", nargs="*", type=Path, help="specs [default: specs/*.fc]")
    ap.add_argument("--write", type=Path, help="replace the runtimes section of this file")
    args = ap.parse_args(argv)
    opsets = (
        [int(o) for o in args.opsets.split(",")]
        if args.opsets
        else list(range(onnx_export.MIN_OPSET, onnx_export.MAX_OPSET + 1))
    )
    spec_paths = args.specs or sorted((ROOT / "specs").glob("*.fc"))
    found, missing = available()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(spec_paths, opsets, found, Path(tmp))
    n_models = len({r[1:4] for r in rows})
    cmd = "python benchmarks/runtime_matrix.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    body = "\n".join(
        [
            "### Which runtimes run which exports",
            "",
            f"{n_models} models: {len(spec_paths)} specs x opsets {opsets[0]}-{opsets[-1]} x "
            f"(plain, --probabilities for classifiers, --fixed-batch {BATCH}), each run by every "
            f"runtime on {BATCH} raw inputs and compared with the NumPy interpreter "
            f"({date.today().isoformat()}, {time.perf_counter() - t0:.0f} s).",
            "",
            table(rows, found, missing, opsets),
            "",
            f"Machine: {machine_line(1, {})}.",
            "",
            f"Reproduce: `{cmd.strip()}`",
        ]
    )
    print(body)
    if args.write:
        replace_section(args.write, body, BEGIN, END)
        print(f"\nwrote the runtimes section of {args.write}")


if __name__ == "__main__":
    main()
