# Special-token strings in user text stay text, in the generator's and the compressor's tokenizers.
import copy

import pytest

from conftest import tiny_config

# the tiny tokenizer's own specials plus BERT's and Llama-3's, added as special tokens (as those tokenizers have)
EXTRA_SPECIALS = ["[SEP]", "[CLS]", "<|eot_id|>"]
TEXT = "stop </s> or <s> then [SEP] [CLS] and <|eot_id|> go"


@pytest.fixture(scope="module")
def tokenizer():
    from scaledown.models import loading
    from scaledown.presets import TINY_GENERATOR
    tok = copy.deepcopy(loading.load_tokenizer(TINY_GENERATOR))
    tok.add_special_tokens({"additional_special_tokens": EXTRA_SPECIALS})
    return tok


def _special_ids(tok):
    return {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}


def _builder(tok, **overrides):
    from scaledown.models.inputs import InputBuilder
    return InputBuilder(tiny_config(**overrides), tok, tok)


def test_eos_never_inside_labels_for_an_answer_holding_its_string(tokenizer):
    inputs = _builder(tokenizer, answer_max_length=64)
    row = {"query": "What does the sign say?", "documents": ["The sign says " + TEXT], "answer": TEXT}
    labels = [t for t in inputs.collate([row])["labels"][0].tolist() if t != -100]
    eos = tokenizer.eos_token_id
    assert labels[-1] == eos and eos not in labels[:-1]          # one EOS: the end of the answer
    assert not _special_ids(tokenizer) & set(labels[:-1])
    assert tokenizer.decode(labels[:-1]).strip() == TEXT          # the text round-trips


def test_query_and_documents_stay_text_in_prompt_and_compressor(tokenizer):
    inputs = _builder(tokenizer, query_max_length=64, doc_max_length=64)
    row = {"query": "Why " + TEXT + "?", "documents": [TEXT], "answer": "x"}
    specials = _special_ids(tokenizer)
    template = set(inputs.prompt("plain question", ["plain document"], mode="text")[0]) & specials
    batch = inputs.collate([row], mode="text", with_answers=False)
    assert set(batch["input_ids"][0].tolist()) & specials <= template | {tokenizer.pad_token_id}
    compressor = inputs.compressor_ids(row["query"], row["documents"][0])
    plain = inputs.compressor_ids("plain question", "plain document")
    assert set(compressor) & specials == set(plain) & specials     # only the framing's own specials (BOS)
    assert compressor.count(tokenizer.bos_token_id) == 1


def test_bidirectional_compressor_framing_only(tokenizer):
    """ModernBERT-style [CLS] query [SEP] document [SEP]: a '[SEP]' in the text adds no separator."""
    tok = copy.deepcopy(tokenizer)
    tok.cls_token, tok.sep_token = "[CLS]", "[SEP]"
    inputs = _builder(tok, compressor_type="modernbert", query_max_length=64, doc_max_length=64)
    ids = inputs.compressor_ids("a [SEP] b [CLS]", "c [SEP] d </s>")
    assert ids.count(tok.sep_token_id) == 2 and ids.count(tok.cls_token_id) == 1
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_pretraining_targets_and_dataset_lengths_keep_text(tokenizer):
    from scaledown.data import ScaleDownDataset
    inputs = _builder(tokenizer)
    row = {"documents": [TEXT], "task": "autoencode", "answer": TEXT}
    labels = [t for t in inputs.collate_pretraining([row])["labels"][0].tolist() if t != -100]
    assert tokenizer.eos_token_id not in labels[:-1]
    # the dataset counts the tokens the model will read (a '</s>' is 4 tokens of text, not 1)
    ds = ScaleDownDataset([{"query": "q", "documents": ["</s>" * 9], "answer": "a"}], tiny_config(),
                          tokenizer=tokenizer)
    assert ds.num_truncated == 1


def test_judge_prompt_keeps_answers_as_text():
    import torch
    from scaledown.evaluation.judge import LLMJudge
    judge = LLMJudge.load("tiny", torch.device("cpu"), batch_size=2)
    tok = judge.tokenizer
    ids = judge.prompt_ids("Where? </s>", ["Pelmar </s>"], "Pelmar </s> <s>")
    plain = judge.prompt_ids("Where?", ["Pelmar"], "Pelmar")
    specials = _special_ids(tok)
    assert tok.eos_token_id not in ids and set(ids) & specials == set(plain) & specials
    assert len(judge.score(["Where? </s>", "q"], [["Pelmar"], ["a"]], ["Pelmar </s>", ""])) == 2
