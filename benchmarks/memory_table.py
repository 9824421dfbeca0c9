"""GPU memory and step time of FLUX.1 Kontext [dev] per storage and offload mode, on paper.

Computed from the real shapes (the models built on the meta device: nothing is allocated) for
one edit at --size x --size with one reference of the same size, and printed as the markdown
table of docs/memory.md. The assumptions, printed under the table:

- weights: bf16 2 bytes; fp8 1 byte plus a float32 scale per output row for the transformer's
  block linears and T5's linears (the rest stays bf16), as `--weights-dtype fp8` stores them;
- activations: the largest live set of one single-stream block in bf16 (its input, linear1's
  output, q/k/v, the attention output, the MLP activation and the concatenation), with memory-
  efficient attention (no N x N matrix); the autoencoder's decode: six tensors of its largest
  level; plus 0.5 GB for the CUDA context;
- step time: the transformer's matmul FLOPs (each linear on the tokens it sees) plus attention's
  4 N^2 d per block, at --efficiency of the card's dense bf16 peak (fp8 weights: the linears at
  twice that where the card has fp8 matmul); block offload moves every block once per step
  over the host link at 80% of its peak, overlapped with compute, so a step takes the longer of
  the two; model offload moves each part once per edit (not counted per step).

Usage: python benchmarks/memory_table.py [--size 1024] [--efficiency 0.5]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from openkontext.model import AutoEncoder, AutoEncoderParams, Flux, FluxParams

GB = 1e9


@dataclass(frozen=True)
class Card:
    name: str
    memory_gb: float
    bf16_tflops: float  # dense, fp32 accumulate
    fp8_matmul: bool
    link_gbps: float  # host to device, theoretical


CARDS = (
    Card("24 GB card (RTX 4090: 165 TFLOPS bf16, PCIe 4.0 x16)", 24, 165, False, 32),
    Card("80 GB card (H100 SXM: 989 TFLOPS bf16, PCIe 5.0 x16)", 80, 989, True, 64),
)


def _t5_clip() -> tuple[nn.Module, nn.Module]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with torch.device("meta"):
        t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240,
                                     num_layers=24, num_heads=64,
                                     feed_forward_proj="gated-gelu"))
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768,
                                            intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, max_position_embeddings=77))
    return t5, clip


def _bytes(module: nn.Module, fp8: bool, fp8_here=lambda name: True) -> float:
    """bf16, or fp8 (+ a float32 scale per row) for the linears `fp8_here` accepts."""
    total = 0.0
    for name, m in module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            quantised = (fp8 and isinstance(m, nn.Linear) and pname == "weight"
                         and fp8_here(name))
            total += p.numel() + 4 * p.shape[0] if quantised else 2 * p.numel()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--efficiency", type=float, default=0.5)
    args = parser.parse_args()
    if args.size % 16 or not 256 <= args.size <= 2048:
        parser.error("--size must be a multiple of 16 in 256..2048")

    # 1. Shapes.
    p = FluxParams()
    with torch.device("meta"):
        flux, ae = Flux(p), AutoEncoder(AutoEncoderParams())
    t5, clip = _t5_clip()
    img = (args.size // 16) ** 2  # tokens of one picture after 8x AE and 2x2 packing
    n_txt, n = 512, 2 * img + 512  # target + reference + T5 tokens
    h, m = p.hidden_size, int(p.hidden_size * p.mlp_ratio)
    blocks = p.depth + p.depth_single_blocks
    in_blocks = lambda name: name.startswith(("double_blocks", "single_blocks"))  # noqa: E731

    # 2. FLOPs of one transformer forward: double blocks (image and text streams apart),
    # single blocks (all tokens), attention over all tokens in every block.
    double_img = sum(x.numel() for k, x in flux.double_blocks[0].named_parameters()
                     if k.startswith(("img_attn", "img_mlp")) and k.endswith("weight"))
    double_txt = sum(x.numel() for k, x in flux.double_blocks[0].named_parameters()
                     if k.startswith(("txt_attn", "txt_mlp")) and k.endswith("weight"))
    single = sum(x.numel() for k, x in flux.single_blocks[0].named_parameters()
                 if k.startswith("linear") and k.endswith("weight"))
    linear_flops = 2 * (p.depth * (double_img * 2 * img + double_txt * n_txt)
                        + p.depth_single_blocks * single * n)
    attention_flops = 4 * n * n * h * blocks
    activations = n * (2 * (3 * h + m) + 2 * (h + m) + 4 * h) * 2 + 0.5 * GB
    decode = 6 * 128 * args.size * args.size * 2

    rows = []
    for storage in ("bf16", "fp8"):
        fp8 = storage == "fp8"
        parts = {
            "transformer": _bytes(flux, fp8, in_blocks),
            "t5": _bytes(t5, fp8, lambda name: name.startswith("encoder.block")
                         and not name.endswith(".wo")),  # wo stays bf16 (text_encoders.py)
            "clip": _bytes(clip, False),
            "ae": _bytes(ae, False),
        }
        block_bytes = _bytes(flux, fp8, in_blocks) - _bytes(
            nn.ModuleDict({k: v for k, v in flux.named_children()
                           if k not in ("double_blocks", "single_blocks")}), False)
        outer = parts["transformer"] - block_bytes
        largest_group = 2 * _bytes(flux.double_blocks[0], fp8, lambda name: True)
        for offload in ("none", "model", "blocks"):
            if offload == "none":
                peak = sum(parts.values()) + max(activations, decode)
            elif offload == "model":
                peak = max(parts["t5"] + parts["clip"], parts["transformer"] + activations,
                           parts["ae"] + decode)
            else:  # T5 and CLIP still visit whole; two block groups resident while stepping
                peak = max(parts["t5"] + parts["clip"], outer + largest_group + activations,
                           parts["ae"] + decode)
            for card in CARDS:
                tflops = card.bf16_tflops * 1e12 * args.efficiency
                linear_rate = tflops * (2 if fp8 and card.fp8_matmul else 1)
                compute = linear_flops / linear_rate + attention_flops / tflops
                transfer = block_bytes / (card.link_gbps * GB * 0.8)
                step = max(compute, transfer) if offload == "blocks" else compute
                fits = "yes" if peak <= card.memory_gb * GB else "no"
                rows.append((storage, offload, card.name.split(" (")[0], peak / GB, fits, step))

    # 3. The table.
    print("| weights | offload | card | peak GPU memory | fits | step (s) |")
    print("|---|---|---|---|---|---|")
    for storage, offload, card, peak, fits, step in rows:
        print(f"| {storage} | {offload} | {card} | {peak:.1f} GB | {fits} | {step:.2f} |")
    print()
    print(f"{args.size}x{args.size} edit + 1 reference: {n} tokens ({2 * img} image, {n_txt} "
          f"text); transformer {sum(x.numel() for x in flux.parameters()) / 1e9:.2f}B params, "
          f"T5-XXL {sum(x.numel() for x in t5.parameters()) / 1e9:.2f}B, CLIP-L "
          f"{sum(x.numel() for x in clip.parameters()) / 1e6:.0f}M, AE "
          f"{sum(x.numel() for x in ae.parameters()) / 1e6:.0f}M")
    print(f"per step: {linear_flops / 1e12:.0f} TFLOP in linears, {attention_flops / 1e12:.0f} "
          f"TFLOP in attention; activations {activations / GB:.1f} GB, decode "
          f"{decode / GB:.1f} GB; efficiency {args.efficiency:.0%} of peak")
    for card in CARDS:
        print(f"- {card.name}")


if __name__ == "__main__":
    main()
