# How far each NxD TP rank's computation over converted shard files is from the unsharded model (tiny, fp32).
"""python benchmarks/tp_reference_error.py  ->  one line per (compressor, tp, pp): max |logit| difference,
|CE + rerank loss| difference and |rerank loss| difference, then the worst of each. Same grid as the tests."""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scaledown.checkpoint import convert  # noqa: E402
from tests.convert_helpers import make_hf_folder, probe_batch  # noqa: E402
from tests.tp_reference import RankReference  # noqa: E402
from tests.unit.test_tp_reference import GRID, unsharded  # noqa: E402


def main() -> None:
    worst = [0.0, 0.0, 0.0]
    with tempfile.TemporaryDirectory() as d:
        for kind in dict.fromkeys(k for k, _, _ in GRID):
            model = make_hf_folder(f"{d}/{kind}", compressor_type=kind)
            batch = probe_batch(model)
            out, logits = unsharded(model, batch)
            for _, tp, pp in [g for g in GRID if g[0] == kind]:
                path = convert("hf", "nxd", f"{d}/{kind}", f"{d}/{kind}_{tp}_{pp}", tp=tp, pp=pp).path
                loss, ref_logits, rerank = RankReference(path, model).forward(batch)
                errors = [float((ref_logits - logits).abs().max()), abs(float(loss) - float(out.loss)),
                          abs(float(rerank) - float(out.rerank_loss))]
                worst = [max(a, b) for a, b in zip(worst, errors)]
                print(f"{kind:10s} tp={tp} pp={pp}  logits {errors[0]:.2e}  loss {errors[1]:.2e}  rerank {errors[2]:.2e}")
    print(f"worst: logits {worst[0]:.2e}, loss {worst[1]:.2e}, rerank {worst[2]:.2e}")


if __name__ == "__main__":
    main()
