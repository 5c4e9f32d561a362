"""fcspec: declare, check, train and export fully connected neural networks.

The pipeline, one module a stage:

    .fc text --syntax--> AST --check--> IR --+--> interpreter / train  (NumPy)
                                             +--> onnx_export --> runtime (onnxruntime)
"""

__version__ = "0.1.0"
