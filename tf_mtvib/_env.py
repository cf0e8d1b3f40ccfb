"""Process settings that must be in place before TensorFlow is imported.

TensorFlow 2.21 leaves its oneDNN kernels off on many x86 CPUs; turning them
on nearly doubled the training throughput of the Table I MTVIB model on the
development machines (see benchmarks/RESULTS.md). ``setdefault`` keeps any
choice the user already made. TensorFlow reads the setting once, when it is
loaded, so a script that imports keras or tensorflow before tf_mtvib keeps
TensorFlow's choice; tf_mtvib then warns, since the slow kernels are easy to
miss and the fix is one line.
"""

import os
import sys
import warnings

_tensorflow_was_loaded = "tensorflow" in sys.modules
_user_chose_onednn = "TF_ENABLE_ONEDNN_OPTS" in os.environ

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _onednn_enabled():
    """Whether the loaded TensorFlow runs its oneDNN kernels (None: unknown)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow build without the query
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


if _tensorflow_was_loaded and not _user_chose_onednn and _onednn_enabled() is False:
    warnings.warn(
        "TensorFlow was imported before tf_mtvib, so tf_mtvib could not turn on TensorFlow's oneDNN CPU "
        "kernels, which this TensorFlow leaves off on this CPU (MTVIB trains markedly faster with them; "
        "benchmarks/RESULTS.md). Import tf_mtvib before keras / tensorflow, or set TF_ENABLE_ONEDNN_OPTS=1 "
        "in the environment (=0 keeps them off and silences this warning).",
        RuntimeWarning,
        stacklevel=2,
    )
