"""The one place that imports Keras.

edgeretina builds every model with tf_keras (Keras 2) because tensorflow-model-optimization 0.8.1
(pruning, QAT) only supports Keras 2. Everything else does ``from edgeretina._keras import keras, tf``;
never write ``tf.keras``.

TensorFlow 2.21 logs through absl before its log level is read, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence the
lines it prints while importing (oneDNN notice, "Could not find cuda drivers", a failed ``cuInit`` on machines
without a GPU). The import runs with file descriptor 2 pointed at a temp file; lines of that known noise are
dropped and anything else is written back to stderr, so real errors stay visible.
"""
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: stderr lines of TensorFlow's import that carry no information for a user (absl prefix ``I0000 …``/``W0000 …``/
#: ``E0000 …`` + source file)
IMPORT_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\] .*"
    r"|E\d{4} [\d:.]+\s+\d+ cuda_(platform|executor|diagnostics)\.cc:\d+\] .*)$")


def _import_quietly():
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf_mod
            import tf_keras as keras_mod
            tf_mod.config.list_physical_devices("GPU")  # cuInit runs (and logs) here, still captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    kept = [ln for ln in text.splitlines() if ln.strip() and not IMPORT_NOISE.match(ln)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
    return tf_mod, keras_mod


tf, keras = _import_quietly()

__all__ = ["keras", "tf"]
