"""BERT in plain torch, with its WordPiece tokenizer: the frozen sentence encoder of the `mini`
model (all-MiniLM-L6-v2) without importing `transformers`, whose model code took 2.4 s of every
CLI start for a 6-layer encoder that runs in milliseconds.

It reads the folder transformers' `BertModel` reads (config.json, model.safetensors,
tokenizer.json) and repeats its forward operation for operation, in the same order, with the
same `scaled_dot_product_attention` call and attention mask transformers passes by default; so
the last hidden states are the same numbers (tests/model/test_bert.py compares the two).
Module names are transformers' too, so the checkpoint loads without renaming a key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

# In the checkpoint but not used here: the position-id buffer and the pooler (we mean-pool).
UNUSED_KEYS = ("embeddings.position_ids", "pooler.")


@dataclass(frozen=True)
class BertParams:
    """The config.json fields the encoder depends on (all-MiniLM-L6-v2's values as defaults)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_config(cls, config: dict) -> BertParams:
        """From a transformers config.json; ValueError for a BERT variant this code lacks."""
        expected = {
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            "is_decoder": False,
        }
        for key, value in expected.items():
            if config.get(key, value) != value:
                raise ValueError(f"unsupported BERT config: {key} = {config[key]!r}")
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


def _embedding(rows: int, width: int) -> nn.Embedding:
    """An embedding table left uninitialised, since the checkpoint fills it (nn.Embedding's own
    random init, run on the meta device, imports torch._dynamo: 0.9 s of start-up)."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class _Embeddings(nn.Module):
    def __init__(self, p: BertParams):
        super().__init__()
        self.word_embeddings = _embedding(p.vocab_size, p.hidden_size)
        self.position_embeddings = _embedding(p.max_position_embeddings, p.hidden_size)
        self.token_type_embeddings = _embedding(p.type_vocab_size, p.hidden_size)
        self.LayerNorm = nn.LayerNorm(p.hidden_size, eps=p.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, L) -> (B, L, hidden); every token has type 0 and position = its index."""
        x = self.word_embeddings(ids) + self.token_type_embeddings.weight[0]
        x = x + self.position_embeddings.weight[: ids.shape[1]]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, p: BertParams):
        super().__init__()
        self.head_dim = p.hidden_size // p.num_attention_heads
        self.query = nn.Linear(p.hidden_size, p.hidden_size)
        self.key = nn.Linear(p.hidden_size, p.hidden_size)
        self.value = nn.Linear(p.hidden_size, p.hidden_size)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, L, hidden), mask None or (B, 1, L, L) bool (True: may attend) -> (B, L, hidden)."""
        b, length, _ = x.shape
        q, k, v = (
            proj(x).view(b, length, -1, self.head_dim).transpose(1, 2)  # (B, heads, L, head_dim)
            for proj in (self.query, self.key, self.value)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return out.transpose(1, 2).reshape(b, length, -1)


class _AddNorm(nn.Module):
    """dense, plus the residual, then LayerNorm (BERT normalises after each sublayer)."""

    def __init__(self, n_in: int, n_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        self.LayerNorm = nn.LayerNorm(n_out, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, p: BertParams):
        super().__init__()
        self.self = _SelfAttention(p)
        self.output = _AddNorm(p.hidden_size, p.hidden_size, p.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, p: BertParams):
        super().__init__()
        self.dense = nn.Linear(p.hidden_size, p.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, p: BertParams):
        super().__init__()
        self.attention = _Attention(p)
        self.intermediate = _Intermediate(p)
        self.output = _AddNorm(p.intermediate_size, p.hidden_size, p.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, p: BertParams):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(p) for _ in range(p.num_hidden_layers))


class Bert(nn.Module):
    """BERT's encoder without the pooler: token ids -> last hidden states."""

    def __init__(self, params: BertParams):
        super().__init__()
        self.params = params
        self.embeddings = _Embeddings(params)
        self.encoder = _Encoder(params)

    def forward(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        """ids, attention_mask (B, L) int (mask 1 at tokens, 0 at padding) -> (B, L, hidden).

        As transformers does: no mask at all when nothing is padding, else a boolean (B, 1, L, L)
        mask that keeps every query from the padding keys."""
        b, length = ids.shape
        mask = None
        if not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :].expand(b, 1, length, length)
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def load_bert(folder: Path) -> Bert:
    """The encoder saved in `folder` (config.json, model.safetensors), in fp32 on the CPU: built
    on the meta device and filled with the checkpoint's tensors (the pooler's left out)."""
    params = BertParams.from_config(json.loads((folder / "config.json").read_text()))
    weights = folder / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith(UNUSED_KEYS)}
    with torch.device("meta"):
        bert = Bert(params)
    expected = set(bert.state_dict())
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"{weights}: not a BERT checkpoint of this shape "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    bert.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return bert.eval().requires_grad_(False)


def load_tokenizer(folder: Path, max_tokens: int):
    """The WordPiece tokenizer of `folder`/tokenizer.json (a `tokenizers.Tokenizer`), set as
    transformers' call with truncation=True, max_length=max_tokens, padding="longest" sets it:
    [CLS] and [SEP] included in max_tokens, padded with [PAD] to the batch's longest."""
    from tokenizers import Tokenizer  # imported here: only the sentence encoder needs it

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    return tokenizer


def tokenize(tokenizer, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """(input ids, attention mask), both (B, L) int64, L the longest prompt's word pieces."""
    encodings = tokenizer.encode_batch(prompts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, mask
