"""The reference for `fcspec predict`: a plain onnxruntime script doing the same work.

Load an IDX images file (and its labels), run the model in batches of 4096 rows
with onnxruntime's default threads (as predict does), print the accuracy and
write the outputs and classes to an .npz.  Only NumPy, gzip and onnxruntime:
what a user would write by hand.

    python benchmarks/plain_predict.py MODEL.onnx IMAGES.gz LABELS.gz OUT.npz
"""

import gzip
import struct
import sys

import numpy as np
import onnxruntime as ort


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main(model, images, labels, out):
    x = read_idx(images).reshape(-1, 1, 28, 28).astype(np.float32)
    y = read_idx(labels)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate(
        [sess.run(None, {name: x[i : i + 4096]})[0] for i in range(0, len(x), 4096)]
    )
    classes = logits.argmax(axis=1)
    print(f"{len(x):,} rows  accuracy {np.mean(classes == y):.6g}")
    np.savez(out, output=logits, **{"class": classes})


if __name__ == "__main__":
    main(*sys.argv[1:5])
