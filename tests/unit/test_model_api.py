# ScaleDownModel's Python API refuses misuse with the fix: documents as a string, empty lists, max_length; modes.
import copy

import pytest

from scaledown.errors import ConfigError, DataError

Q = ["Where was Dravok born?"]
DOC = "Dravok was born in Pelmar."


def test_a_string_instead_of_a_document_list_is_refused(model):
    for call in (model.answer, model.compress):
        with pytest.raises(DataError, match=r"documents\[0\] is one string.*Wrap it"):
            call(Q, [DOC])
        with pytest.raises(DataError, match="not a single string"):
            call(Q, DOC)
    assert len(model.answer(Q, [[DOC]])) == 1


def test_empty_document_lists(model):
    for call in (model.answer, model.compress):
        with pytest.raises(DataError, match=r"documents\[0\] is an empty list.*documents_as='none'"):
            call(Q, [[]])
    assert len(model.answer(Q, [[]], documents_as="none")) == 1   # no documents: the no-RAG baseline


def test_reranking_api_inputs():
    from conftest import tiny_config
    from scaledown import ScaleDownModel
    model = ScaleDownModel(tiny_config(enable_reranking=True))
    with pytest.raises(DataError, match="empty list"):
        model.rerank(Q, [[]])
    assert len(model.rerank(Q, [[DOC, "Pelmar is a town."]])[0]) == 2


def test_max_length_refused_naming_max_new_tokens(model):
    with pytest.raises(ConfigError, match="max_new_tokens=3"):
        model.answer(Q, [[DOC]], max_length=3)
    with pytest.raises(ConfigError, match="positive integer"):
        model.answer(Q, [[DOC]], max_new_tokens=0)
    batch = model.inputs.collate([{"query": Q[0], "documents": [DOC]}], with_answers=False)
    out = model.generator.generate(inputs_embeds=model.input_embeddings(batch)[0],
                                   attention_mask=batch["attention_mask"], max_new_tokens=2, do_sample=False,
                                   min_new_tokens=2, pad_token_id=model.tokenizer.pad_token_id)
    assert out.shape[1] == 2   # what max_new_tokens=2 means: two new tokens


def test_compress_runs_in_eval_mode_and_restores(model):
    seen = []
    hook = model.compressor.register_forward_hook(lambda m, i, o: seen.append(m.training))
    model.train()
    model.compress(Q, [[DOC]])
    assert seen == [False] and model.training
    model.eval()
    model.compress(Q, [[DOC]])
    assert not model.training
    hook.remove()


def test_from_pretrained_returns_eval_mode(model, tmp_path):
    from scaledown import ScaleDownModel
    model.train()
    model.save_pretrained(str(tmp_path / "saved"))
    loaded = ScaleDownModel.from_pretrained(str(tmp_path / "saved"))
    assert not loaded.training and not any(m.training for m in loaded.modules())


def test_tokenizer_larger_than_embedding_is_named_before_any_forward(config):
    from scaledown import ScaleDownModel
    from scaledown.models import loading
    tok = copy.deepcopy(loading.load_tokenizer(config.generator_model_name))
    tok.add_tokens([f"newword{i}" for i in range(200)])
    with pytest.raises(ConfigError, match=rf"has {len(tok)} ids but the embedding of '{config.generator_model_name}' "
                                          rf"has only 2048 rows"):
        ScaleDownModel(config, tokenizer=tok)
