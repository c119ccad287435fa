"""The runtime imports and tracks on a machine without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from paths import REPO_ROOT

# Runs in a fresh interpreter where any import of torch fails, as if it were not installed.
SCRIPT = textwrap.dedent(
    """
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, NoTorch())

    import numpy as np
    import omc.runtime
    import omc.runtime.tracker
    import omc.runtime.backends
    import omc.runtime.backends.onnxrt
    import omc.runtime.backends.triton
    from omc.runtime.tracker import Tracker
    from omc.contract import EngineMeta

    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the torch blocker did not work")

    class Detector:
        def infer(self, feeds):
            boxes = np.array([[[10, 10, 60, 150]] + [[0, 0, 0, 0]] * 3], np.float32)
            scores = np.array([[0.9, 0, 0, 0]], np.float32)
            emb = np.zeros((1, 4, 8), np.float32)
            emb[0, 0, 0] = 1
            return {"det_boxes": boxes, "det_scores": scores, "det_density": scores * 0, "det_embeddings": emb}

    tracker = Tracker(Detector(), None, EngineMeta(input_hw=(192, 320), embedding_dim=8))
    out = [tracker.update(np.zeros((192, 320, 3), np.uint8)) for _ in range(3)]
    assert [t.track_id for t in out[2]] == [1], out
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
    print("ok")
    """
)


def test_runtime_imports_and_tracks_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
