"""Our BERT (model/bert.py) against transformers' BertModel and tokenizer on the shipped
all-MiniLM-L6-v2: the same word pieces and the same hidden states, so the mini model, trained on
transformers' encoding, sees the same text embeddings it was trained on."""

import math

import pytest
import torch

from openkontext.model import SentenceTextParams, build_text_encoder, get_preset
from openkontext.model.bert import BertParams, load_bert, load_tokenizer, tokenize
from openkontext.model.text import sentence_encoder_folder

transformers = pytest.importorskip("transformers")

PROMPTS = [
    "",
    "make the circle blue",
    "Make The CIRCLE Blue!!",
    "remove the small blue star",
    "add a large red square at the top left, and keep everything else as it is",
    "paint   the\tbackground\nyellow",
    "make it look like night",
    "rendez le café plus foncé",  # accents: BERT's uncased normaliser strips them
    "把圆圈变成蓝色",  # CJK characters: one word piece each
    "turn the 🟦 into a ⭐ [MASK] [SEP]",  # unknown symbols, special tokens in the text
    "supercalifragilisticexpialidocious " + "x" * 120,  # a word longer than WordPiece's 100
    "red " * 100,  # truncated at max_tokens
    " ".join(f"word{i}" for i in range(40)),  # truncated in the middle of word pieces
]


@pytest.fixture(scope="module")
def folder():
    return sentence_encoder_folder(SentenceTextParams())


@pytest.fixture(scope="module")
def reference(folder):
    """transformers' tokenizer and BertModel, as model/text.py read them before model/bert.py."""
    transformers.logging.set_verbosity_error()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    bert = transformers.BertModel.from_pretrained(
        str(folder), local_files_only=True, add_pooling_layer=False
    )
    return tokenizer, bert.eval()


def reference_encode(reference, prompts, max_tokens):
    """The removed SentenceTextEncoder.encode, word for word, on transformers."""
    tokenizer, bert = reference
    batch = tokenizer(
        prompts, padding="longest", truncation=True, max_length=max_tokens, return_tensors="pt"
    )
    with torch.no_grad():
        states = bert(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    keep = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    txt = states * keep
    pooled = txt.sum(1) / keep.sum(1)
    vec = pooled * (math.sqrt(384) / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    return batch, torch.nn.functional.pad(txt, (0, 0, 0, max_tokens - txt.shape[1])), vec


def test_word_pieces_are_transformers(folder, reference):
    max_tokens = SentenceTextParams().max_tokens
    tokenizer = load_tokenizer(folder, max_tokens)
    for prompts in ([p] for p in PROMPTS), [PROMPTS]:  # one at a time, then one padded batch
        for batch in prompts:
            ids, mask = tokenize(tokenizer, batch)
            expected = reference[0](
                batch,
                padding="longest",
                truncation=True,
                max_length=max_tokens,
                return_tensors="pt",
            )
            assert torch.equal(ids, expected["input_ids"]), batch
            assert torch.equal(mask, expected["attention_mask"]), batch
    ids, _ = tokenize(tokenizer, ["red " * 100])
    assert ids.shape == (1, max_tokens) and ids[0, -1] == tokenizer.token_to_id("[SEP]")


def test_hidden_states_are_transformers(folder, reference):
    ours = load_bert(folder)
    assert ours.params == BertParams()  # all-MiniLM-L6-v2: 6 layers, 384 wide, 12 heads
    tokenizer = load_tokenizer(folder, 32)
    for batch in [[p] for p in PROMPTS] + [PROMPTS]:  # unpadded (no mask), then padded
        ids, mask = tokenize(tokenizer, batch)
        with torch.no_grad():
            expected = reference[1](input_ids=ids, attention_mask=mask).last_hidden_state
            got = ours(ids, mask)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # equal bits today


def test_sentence_encoder_gives_what_the_transformers_path_gave(reference):
    params = get_preset("mini").text
    encoder = build_text_encoder(params)
    txt, vec = encoder.encode(PROMPTS)
    _, ref_txt, ref_vec = reference_encode(reference, PROMPTS, params.max_tokens)
    torch.testing.assert_close(txt, ref_txt, rtol=0, atol=1e-6)
    torch.testing.assert_close(vec, ref_vec, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in encoder.parameters())
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
