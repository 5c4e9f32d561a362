"""fcspec: declare, check, train and export fully connected neural networks.

The pipeline, one module a stage:

    .fc text --syntax--> AST --check--> IR --+--> interpreter / train  (NumPy)
                                             +--> onnx_export --> runtime (onnxruntime)

From Python (docs/python.md):

    import fcspec
    model = fcspec.load("specs/digits.fc").fit()
    model.evaluate()

The API is imported on first use (module `__getattr__`), so `import fcspec`
and `fcspec check` stay light: NumPy's trainer, onnx and onnxruntime load only
when a model is trained or exported.
"""

__version__ = "0.1.0"

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "load": "api",
    "loads": "api",
    "load_run": "api",
    "Model": "api",
    "FcspecWarning": "api",
    "FcspecError": "errors",
    "SpecError": "errors",
    "DataError": "errors",
    "TrainingError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fcspec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
