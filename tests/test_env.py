"""The process settings of tf_mtvib._env, checked in fresh interpreters."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY = "from tensorflow.python.util import _pywrap_util_port as port; enabled = bool(port.IsMklEnabled())"


def run_python(code):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_tf_mtvib_first_turns_onednn_on_and_importing_it_late_says_so():
    first = run_python(f"import tf_mtvib, keras; {QUERY}; import json; print(json.dumps(enabled))")
    assert first is True

    late = run_python(
        "import warnings, keras\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import tf_mtvib\n"
        f"{QUERY}\n"
        "import json; print(json.dumps([enabled, [str(w.message) for w in caught]]))"
    )
    enabled, messages = late
    onednn_warnings = [m for m in messages if "oneDNN" in m]
    if enabled:  # a CPU where TensorFlow turns oneDNN on by itself: nothing to say
        assert onednn_warnings == []
    else:
        assert len(onednn_warnings) == 1 and "Import tf_mtvib before keras" in onednn_warnings[0]
