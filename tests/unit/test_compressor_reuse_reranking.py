# A compressor saved with the RR token and head is reused by a run without reranking (the head is left out).
import torch


def test_reranking_compressor_reused_without_reranking(tmp_path):
    from scaledown import ScaleDownConfig, ScaleDownModel
    saved = ScaleDownModel(ScaleDownConfig.from_dict({"preset": "tiny", "enable_reranking": True}))
    saved.save_pretrained(str(tmp_path / "pre"))
    config = ScaleDownConfig.from_dict({"preset": "tiny", "enable_reranking": False, "seed": 3})
    model = ScaleDownModel.with_pretrained_compressor(str(tmp_path / "pre"), config)
    assert model.compressor.rr_embedding is None and model.compressor.rr_head is None
    for name, tensor in model.compressor.state_dict().items():
        assert torch.equal(tensor, saved.compressor.state_dict()[name]), name
