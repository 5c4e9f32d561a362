"""The `fcspec` command.  Thin: each command calls one library function.

Every `FcspecError` becomes its message on stderr and exit 1 (an interrupted
run exits 130 / 143), in one place (`_Group.invoke`); click keeps exit 2 for
usage errors.  Heavy modules
(numpy's trainer, onnx, onnxruntime) are imported inside the commands that use
them, so `fcspec check` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import FcspecError

EPILOG = """\b
Examples:
  fcspec check specs/*.fc              static checks, no data read
  fcspec show specs/mnist.fc           layer table: shapes and parameters
  fcspec explain specs/mnist.fc        every default, the update rule, lr per epoch
  fcspec run specs/digits.fc           train; writes runs/Digits/
  fcspec trace specs/digits.fc         one training step explained, gradients checked
  fcspec plot runs/Digits              curves, layer norms, dead ReLUs, first-layer weights
  fcspec export specs/digits.fc --onnx runs/Digits/Digits.onnx for onnxruntime
  fcspec sweep specs/digits_sweep.fc   search its sweep block; writes sweeps/DigitsSweep/
"""


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


class _Group(click.Group):
    """The command group; the one place fcspec's errors become a message and an exit code,
    never a traceback, whichever command raised them."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FcspecError as e:
            _echo_err(str(e))
            sys.exit(getattr(e, "exit_code", 1))
        except KeyboardInterrupt:
            _echo_err("interrupted")
            sys.exit(130)
        except OSError as e:
            # A full disk or a read-only folder while writing an output: the user's
            # environment, not a bug in fcspec, so a message rather than a traceback.
            where = f"{e.filename}: " if e.filename else ""
            _echo_err(f"error: {where}{e.strerror or e}")
            sys.exit(1)
        except MemoryError:
            _echo_err(
                "error: out of memory: the data, the model or its batch does not fit "
                "in this machine's memory (try less data, a smaller batch or fewer units)"
            )
            sys.exit(1)


def _checked(path: str, quiet: bool = False):
    """Check a spec, print its warnings, and return the check result (or raise its errors)."""
    from .check import check_file
    from .errors import SpecError

    result = check_file(path)
    if result.errors:
        raise SpecError(result.diagnostics, result.source)
    if not quiet:
        for w in result.warnings:
            _echo_err(w.render(result.source))
    return result


def _load(path: str, quiet: bool = False):
    """The checked IR of a spec (its warnings printed)."""
    return _checked(path, quiet).spec


def _model(path: str, quiet: bool = False):
    """The spec as a Python API `Model` (its warnings printed)."""
    from .api import Model

    result = _checked(path, quiet)
    return Model(result.spec, result.source)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fcspec")
def main() -> None:
    """Declare, check, train and export fully connected neural networks.

    A .fc file declares a model (linear layers and activations), its loss,
    optimizer, learning-rate schedule, data and training loop. fcspec checks it
    with located errors, trains it in NumPy with PyTorch's exact numerics, and
    exports it to ONNX for onnxruntime.
    """


SPEC = click.argument("file", type=click.Path(dir_okay=False, path_type=str))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
def check(files: tuple[str, ...]) -> None:
    """Check .fc files without reading any data: names, types, ranges, shapes,
    and the loss against the model's output. Errors exit 1; warnings don't."""
    from .check import check_file

    failed = 0
    for path in files:
        result = check_file(path)
        for d in result.diagnostics:
            _echo_err(d.render(result.source))
        if result.errors:
            failed += 1
            n = len(result.errors)
            _echo_err(f"{path}: {n} error{'s' if n != 1 else ''}")
        else:
            spec = result.spec
            extra = ""
            if result.sweep is not None:
                n = len(result.sweep.params)
                extra = (
                    f"; a sweep of {n} value{'s' if n != 1 else ''}, {result.sweep.trials} trials"
                )
            if spec.model.pending:  # `input auto` / `linear(outputs)`: check reads no data
                widths = " and ".join(spec.model.auto)
                click.echo(f"{path}: ok ({spec.name}, {widths} from the data{extra})")
            else:
                click.echo(f"{path}: ok ({spec.name}, {spec.model.num_params:,} parameters{extra})")
    if failed:
        sys.exit(1)


@main.command()
@SPEC
def show(file: str) -> None:
    """Print the layer table: name, op, output shape and parameters, with totals."""
    from .data import resolve_from_data
    from .describe import show as show_table

    click.echo(show_table(*resolve_from_data(_load(file))), nl=False)


@main.command(name="ir")
@SPEC
def ir_command(file: str) -> None:
    """Print the checked IR as canonical JSON (stable key order)."""
    from .ir import to_json

    click.echo(to_json(_load(file, quiet=True)), nl=False)


@main.command()
@SPEC
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Explain a run of this many epochs (as `run --epochs N` trains it).",
)
def explain(file: str, epochs) -> None:
    """Explain a spec: every resolved default, the optimizer's update rule and the
    learning rate of every epoch under the schedule."""
    from .data import resolve_from_data
    from .describe import explain as explain_text
    from .ir import with_epochs

    spec = _load(file)
    spec = spec if epochs is None else with_epochs(spec, epochs)
    click.echo(explain_text(*resolve_from_data(spec)), nl=False)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("--write", "-w", is_flag=True, help="Rewrite the files in place (atomically).")
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if any file is not formatted.",
)
def fmt(files: tuple[str, ...], write: bool, check_only: bool) -> None:
    """Print .fc files in canonical form (comments kept). The formatted spec
    means exactly the same: `fcspec ir` of both is equal."""
    from .check import read_source
    from .fmt import format_source

    unformatted = []
    for path in files:
        text = read_source(path)
        out = format_source(text, path)
        if check_only:
            if out != text:
                unformatted.append(path)
                _echo_err(f"{path}: would reformat")
        elif write:
            if out != text:
                from .io import rewrite_file

                rewrite_file(path, out.encode("utf-8"))  # through symlinks, keeping mode and links
                _echo_err(f"{path}: reformatted")
        else:
            click.echo(out, nl=False)
    if unformatted:
        sys.exit(1)


@main.command()
@SPEC
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=str),
    help="Run folder [default: runs/<model name>/].",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Override the spec's epochs (with --resume: the total).",
)
@click.option("--seed", type=click.IntRange(min=0), help="Override the spec's seed.")
@click.option(
    "--init",
    type=click.Path(dir_okay=False, path_type=str),
    help="Start from these weights (.npz or .safetensors with NAME.weight / NAME.bias).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=str),
    help="Continue an interrupted run from its checkpoint.npz (or its run folder).",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
@click.option(
    "--plot",
    is_flag=True,
    help="Also draw curves.png (loss, metric, lr, layer norms, dead ReLUs), weights.png for "
    "image inputs, boundary.png for a 2-D classifier (needs pip install -e '.[plot]').",
)
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    type=click.Path(file_okay=False, path_type=str),
    help="Also write TensorBoard event files to this folder (tensorboard --logdir DIR).",
)
@click.option(
    "--mlflow",
    "mlflow_uri",
    metavar="URI",
    help="Also log the run to MLflow, e.g. sqlite:///mlflow.db (offline) or http://host:5000.",
)
def run(
    file: str, out_dir, epochs, seed, init, resume, quiet, plot, tensorboard_dir, mlflow_uri
) -> None:
    """Train FILE with the NumPy interpreter.

    \b
    Writes to the run folder:
      weights.npz      NAME.weight [out, in] and NAME.bias (torch load_state_dict keys)
      weights.safetensors  the same (with the safetensors package: the interop extra)
      preprocess.npz   the input scaling/normalization fitted on the training split
      checkpoint.npz   everything needed to resume, after every epoch (atomic)
      metrics.jsonl    one line per epoch: train_loss, val_loss, val_accuracy, lr, seconds
      layers.jsonl     one line per epoch: per-layer weight and gradient norms, dead ReLUs
      summary.json     final and test figures
    Ctrl-C writes a checkpoint; continue with --resume.
    """
    trackers = []
    if tensorboard_dir or mlflow_uri:
        from . import track

        if tensorboard_dir:
            trackers.append(track.TensorBoard(tensorboard_dir))
        if mlflow_uri:
            trackers.append(track.MLflow(mlflow_uri))
    try:
        model = _model(file, quiet=quiet).fit(
            out=out_dir,
            epochs=epochs,
            seed=seed,
            init=init,
            resume=resume,
            verbose=not quiet,
            plot=plot,
            callbacks=trackers,
        )
    except BaseException as e:  # the trackers' runs end as failed or killed, not running
        from .train import Interrupted

        status = "KILLED" if isinstance(e, (KeyboardInterrupt, Interrupted)) else "FAILED"
        for t in trackers:
            t.close(status)
        raise
    if not quiet:
        click.echo(run_report(model.summary, model.run_dir))


def run_report(summary: dict, where: Path) -> str:
    """The closing lines of `fcspec run`: final figures and where the files are."""
    figures = []
    for key in (
        "test_accuracy",
        "test_loss",
        "test_mae",
        "test_rmse",
        "val_accuracy",
        "val_loss",
        "val_mae",
        "val_rmse",
    ):
        if key in summary and summary[key] is not None:
            v = summary[key]
            figures.append(f"{key} {v:.2%}" if key.endswith("accuracy") else f"{key} {v:.4g}")
    lines = []
    if figures:
        lines.append("  ".join(figures[:4]))
    took = summary.get("seconds")
    lines.append(
        f"saved {where}/ (weights.npz, checkpoint.npz, metrics.jsonl, summary.json)"
        + (f" after {summary.get('epochs')} epochs in {took:.1f} s" if took is not None else "")
    )
    return "\n".join(lines)


@main.command()
@SPEC
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    help="Rows in the traced batch [default: the spec's batch].",
)
@click.option(
    "--step",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trace training step K (the K - 1 steps before it are taken first).",
)
@click.option(
    "--checks",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Entries of each gradient checked by finite differences.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON (for tools).")
def trace(file: str, batch, step, checks, as_json) -> None:
    """Explain one real training step of FILE, layer by layer.

    \b
    Prints every tensor of the forward pass (name, shape, first values), the
    loss, the gradient of every tensor with the formula fcspec computes it by,
    a finite-difference check of each gradient (float64, max relative error,
    ok/FAIL), and the optimizer's update of one parameter with its numbers.
    Exits 1 when a gradient check fails.
    """
    import json

    from . import trace as ftrace

    result = ftrace.trace(_load(file, quiet=as_json), batch=batch, step=step, checks=checks)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(ftrace.format_text(result), nl=False)
    if not result["check"]["ok"]:
        raise FcspecError("a gradient check failed: the backward pass disagrees with the loss")


@main.command()
@SPEC
@click.option(
    "--trials", type=click.IntRange(min=1), help="Trials to finish [default: the block's trials]."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Local worker processes, one BLAS thread each [default: the cores].",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS",
    help="Run the trials on this Dask cluster (tcp://host:8786) instead of locally.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="The study's database [default: sqlite in the sweep folder]; "
    "postgresql://... for several machines.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=str),
    help="Sweep folder [default: sweeps/<model name>/].",
)
@click.option(
    "--show", is_flag=True, help="Train nothing: write results.csv, best.fc and sweep.png now."
)
def sweep(file: str, trials, workers, dask_address, storage, out_dir, show) -> None:
    """Search the values FILE's sweep block declares, with Optuna, trials in
    parallel on Dask (needs the extra: pip install -e '.[sweep]').

    \b
    Writes to the sweep folder:
      study.db         the Optuna study (SQLite): run the command again to resume
      trial_0007/      each trial's spec.fc and run files (weights.npz, metrics.jsonl, ...)
      results.csv      one row per trial: state, monitor, epochs, seconds, values
      best.fc          the best trial's spec, ready for `fcspec run`
      sweep.png        the monitor against each swept value
    Ctrl-C stops the trials in flight; the same command resumes.
    """
    from .sweep.study import sweep as run_sweep

    result = run_sweep(
        file,
        trials=trials,
        workers=workers,
        dask=dask_address,
        storage=storage,
        out=out_dir,
        show=show,
    )
    click.echo(sweep_report(result))
    if result["best"] is None and result["table"]:
        raise FcspecError(
            f"no trial completed: each trial folder in {result['out']}/ has its error.txt"
        )


def sweep_report(result: dict) -> str:
    """The closing lines of `fcspec sweep`: the best trials and where the files are."""
    from .sweep import report

    out = result["out"]
    lines = []
    table, top = result["table"], result["best"]
    if table:
        sw = result["sweep"]
        lines.append(report.table_text(table, sw))
    if top is not None:
        sw = result["sweep"]
        lines.append(
            f"best: trial {top['trial']}, {sw.monitor} {top[sw.monitor]:.4f} -> {out}/best.fc"
        )
    lines.append(f"wrote {out}/results.csv, {out}/sweep.png ({len(table)} trials in the study)")
    return "\n".join(lines)


@main.command(name="plot")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
def plot_command(run_dir: str) -> None:
    """Draw the pictures of RUN_DIR, a finished run or one still training.

    \b
    curves.png    loss and metric (train and validation), the learning rate, each
                  layer's weight and gradient norms, the fraction of dead ReLUs
    weights.png   for image inputs: the first layer's weight rows as images
    boundary.png  for a classifier of a 2-D input: the decision boundary and the points
    """
    from .plot import plot_run

    for path in plot_run(run_dir):
        click.echo(f"wrote {path}")


@main.command(name="eval")
@SPEC
@click.option(
    "--weights",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Trained weights (.npz or .safetensors), e.g. runs/<name>/weights.npz.",
)
def eval_command(file: str, weights: str) -> None:
    """Loss and metrics of trained weights on the spec's test data (or, without
    test data, its validation split)."""
    from .api import Model

    result = Model.from_weights(_load(file), weights).evaluate()
    split = result.pop("split", "test")
    rows = result.pop("rows", None)
    head = f"{split} split" + (f" ({rows:,} rows)" if rows else "")
    click.echo(head)
    for key, value in result.items():
        if key.startswith(("test_", "val_", "train_")):
            continue
        click.echo(
            f"  {key:<10} {value:.6g}" if isinstance(value, float) else f"  {key:<10} {value}"
        )


@main.command()
@SPEC
@click.option("--onnx", "as_onnx", is_flag=True, help="Export as an ONNX model.")
@click.option(
    "--torch",
    "as_torch",
    is_flag=True,
    help="Write the network as a readable PyTorch module (nn.Module, fcspec's layer names).",
)
@click.option(
    "--train",
    "with_training",
    is_flag=True,
    help="With --torch: the PyTorch training script (loss, optimizer, schedule, batches, seed).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=str),
    help="Output file [default: --onnx next to the weights, <name>.onnx; --torch <name>.py, "
    "with --train train_<name>.py].",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=str),
    help="Trained weights, .npz or .safetensors [default: runs/<name>/weights.npz].",
)
@click.option(
    "--opset", type=int, default=None, help="ONNX opset [default: fcspec's pinned default]."
)
@click.option(
    "--probabilities",
    is_flag=True,
    help="Append the softmax (or sigmoid) a model trained on logits leaves out.",
)
@click.option(
    "--fixed-batch",
    type=click.IntRange(min=1),
    help="A static batch size instead of the dynamic one (for NNAPI, CoreML, ...).",
)
def export(
    file: str,
    as_onnx: bool,
    as_torch: bool,
    with_training: bool,
    output,
    weights,
    opset,
    probabilities,
    fixed_batch,
) -> None:
    """Export FILE: with --onnx, its trained weights as an ONNX inference graph (the
    data preprocessing baked in, so the model takes raw inputs); with --torch, the
    network as PyTorch source that loads fcspec's weights as they are."""
    if as_onnx == as_torch:
        raise click.UsageError("choose one format: --onnx or --torch")
    if with_training and not as_torch:
        raise click.UsageError("--train goes with --torch")
    spec = _load(file)
    if as_torch:
        import os

        from . import torch_export

        stem = spec.name.lower()
        target = Path(output or (f"train_{stem}.py" if with_training else f"{stem}.py"))
        if with_training:
            rel = os.path.relpath(Path(file).resolve(), target.resolve().parent)
            text = torch_export.training_source(spec, Path(rel).as_posix(), target.name)
        else:
            text = torch_export.module_source(spec, target.stem)
        click.echo(f"wrote {torch_export.write(target, text)}")
        return
    from . import onnx_export

    kwargs = {} if opset is None else {"opset": opset}
    path = onnx_export.export_file(
        spec, output, weights, probabilities=probabilities, fixed_batch=fixed_batch, **kwargs
    )
    note = onnx_export.probabilities_note(spec) if probabilities else None
    if note:
        _echo_err(note)
    click.echo(f"wrote {path}")


@main.command(name="import")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for <name>.fc, weights.npz and preprocess.npz.",
)
@click.option("--name", help="Model name [default: the fcspec name in the model, else the file's].")
@click.option(
    "--task",
    type=click.Choice(["classification", "binary", "regression"]),
    help="What the outputs are [default: read from the graph; logits for 2+ outputs].",
)
@click.option(
    "--output", "output_name", help="The graph output to import [default: the first float one]."
)
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="Training data (.npz, or .csv with --target) for the spec's data section.",
)
@click.option("--target", help="Label column of a --data CSV file.")
def import_command(model: str, out_dir: str, name, task, output_name, data_file, target) -> None:
    """Import an ONNX MLP (torch.onnx.export, skl2onnx, fcspec) as a spec and weights.

    \b
    Writes to --out:
      <name>.fc        the network as a spec (loss and optimizer for fine-tuning)
      weights.npz      NAME.weight [out, in] / NAME.bias
      preprocess.npz   the graph's input preprocessing (Sub/Div/Mul by constants), if any
    Then: fcspec verify DIR/<name>.fc --weights DIR/weights.npz, fcspec run
    DIR/<name>.fc --init DIR/weights.npz (after adding data) to fine-tune.
    A node fcspec cannot express is refused with its name and op type.
    """
    import os

    from . import onnx_import

    data_rel = None
    if data_file is not None:
        data_rel = Path(
            os.path.relpath(Path(data_file).resolve(), Path(out_dir).resolve())
        ).as_posix()
    result, paths = onnx_import.import_file(
        model, out_dir, name=name, task=task, output=output_name, data=data_rel, target=target
    )
    for note in result.notes:
        _echo_err(f"note: {note}")
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
    click.echo(f"check it: fcspec verify {paths['spec']} --weights {paths['weights']}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.argument("data", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=str),
    help="Write predictions: .npz (keys output, class) or .csv.",
)
@click.option("--batch", type=click.IntRange(min=1), help="Rows per onnxruntime call.")
@click.option("--target", help="Label column of a CSV file.")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=str),
    help="IDX labels file for IDX images (e.g. t10k-labels-idx1-ubyte.gz).",
)
@click.option(
    "--trust-model",
    is_flag=True,
    help="Also run a graph fcspec could not have exported (other ops, Loop/If subgraphs); "
    "such a graph may run without end or compute anything.",
)
@click.option(
    "--task",
    type=click.Choice(["classification", "binary", "regression"]),
    help="What the outputs are, for a model without fcspec's metadata (scores it).",
)
def predict(model: str, data: str, output, batch, target, labels, trust_model, task) -> None:
    """Run an exported MODEL.onnx over DATA with onnxruntime; prints accuracy
    when DATA has labels. Only graphs fcspec can export are run (see --trust-model).

    \b
    DATA is one of:
      rows.npz     arrays x (and y for labels)
      rows.csv     a header row; --target names the label column
      images.gz    MNIST's IDX format, gzipped or not; --labels for accuracy
      raw.csv      for a model trained on a table: the raw file (any delimiter,
                   .gz/.parquet too) read by column name with the training reader;
                   --output gets the class names, accuracy uses the target column
    """
    from . import runtime

    result = runtime.predict(
        model,
        data,
        output=output,
        batch=batch,
        target=target,
        labels=labels,
        trust_model=trust_model,
        task=task,
    )
    click.echo(f"{result['rows']:,} rows -> output {list(result['output_shape'])}")
    for key, what in (
        ("imputed", "missing cells imputed"),
        ("unseen", "unseen categories (all zeros)"),
    ):
        counts = result.get(key) or {}
        if counts:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            click.echo(f"  {sum(counts.values())} {what}: {detail}")
    for key in ("accuracy", "mse", "mae"):
        if key in result:
            click.echo(f"  {key:<10} {result[key]:.6g}")
    if result.get("note"):
        _echo_err(f"note: {result['note']}")
    if result.get("output_path"):
        click.echo(f"wrote {result['output_path']}")


@main.command()
@SPEC
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=str),
    help="Trained weights, .npz or .safetensors [default: runs/<name>/weights.npz].",
)
@click.option(
    "--opset", type=int, default=None, help="ONNX opset to export and check [default: 17]."
)
def verify(file: str, weights, opset) -> None:
    """Run the NumPy interpreter, onnxruntime and onnx.reference on the same
    inputs (batch 1 and batch N); exit 1 if they differ beyond tolerance."""
    from . import onnx_export, runtime

    spec = _load(file)
    params, preprocess, wpath = onnx_export.load_weights(spec, weights)
    schema = onnx_export.load_schema(wpath)
    result = runtime.verify(spec, params, preprocess, schema=schema, opset=opset)
    click.echo(runtime.format_verify(result))
    if not result["ok"]:
        raise FcspecError("the runtimes disagree beyond tolerance")


@main.command()
@click.option(
    "--stdio", is_flag=True, help="Talk over stdin/stdout (the default and only transport)."
)
def lsp(stdio: bool) -> None:
    """Run the language server for editors (LSP over stdin/stdout): diagnostics
    as you type, hover, completion, formatting, symbols and go to definition.
    See docs/editors.md for VS Code, Neovim and Emacs."""
    try:
        from .lsp import serve
    except ImportError as e:  # the optional extra is missing
        raise FcspecError(
            f"the language server needs pygls and lsprotocol ({e.name} is not installed): "
            "pip install -e '.[lsp]'"
        ) from None
    serve()


if __name__ == "__main__":
    main()
