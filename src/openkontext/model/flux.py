"""The FLUX.1 rectified-flow transformer (double-stream then single-stream blocks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import islice
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from openkontext.model.layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    RopeEmbedder,
    SingleStreamBlock,
    timestep_embedding,
)

if TYPE_CHECKING:
    from openkontext.model.step_cache import StepCache


@dataclass(frozen=True)
class FluxParams:
    in_channels: int = 64  # packed latent channels per token (4 * z_channels)
    out_channels: int = 64
    vec_in_dim: int = 768  # pooled text vector (CLIP-L)
    context_in_dim: int = 4096  # text token width (T5-XXL)
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19  # double-stream blocks
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)  # rope channels for (index, row, col)
    theta: int = 10_000
    qkv_bias: bool = True
    guidance_embed: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        head_dim = self.hidden_size // self.num_heads
        if sum(self.axes_dim) != head_dim:
            raise ValueError(f"sum(axes_dim)={sum(self.axes_dim)} must equal head width {head_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FluxParams:
        d = dict(d)
        d["axes_dim"] = tuple(d["axes_dim"])
        return cls(**d)


class Flux(nn.Module):
    """Predicts the flow velocity for image tokens given text tokens and a conditioning vector."""

    def __init__(self, params: FluxParams):
        super().__init__()
        self.params = params
        p = params
        self.in_channels = p.in_channels
        self.out_channels = p.out_channels
        self.pe_embedder = RopeEmbedder(p.theta, p.axes_dim)
        self.img_in = nn.Linear(p.in_channels, p.hidden_size, bias=True)
        self.time_in = MLPEmbedder(256, p.hidden_size)
        self.vector_in = MLPEmbedder(p.vec_in_dim, p.hidden_size)
        self.guidance_in = MLPEmbedder(256, p.hidden_size) if p.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(p.context_in_dim, p.hidden_size)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias)
            for _ in range(p.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio)
            for _ in range(p.depth_single_blocks)
        )
        self.final_layer = LastLayer(p.hidden_size, p.out_channels)

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        txt: Tensor,
        txt_ids: Tensor,
        timesteps: Tensor,
        y: Tensor,
        guidance: Tensor | None = None,
        step_cache: StepCache | None = None,
    ) -> Tensor:
        """Velocity for every image token.

        img: (B, Li, in_channels) target tokens, then reference tokens if any
        img_ids: (B, Li, 3), txt: (B, Lt, context_in_dim), txt_ids: (B, Lt, 3)
        timesteps: (B,) in [0, 1], y: (B, vec_in_dim), guidance: (B,) distilled guidance
        step_cache: the sampling run's cache, when steps may skip blocks (see step_cache.py)
        -> (B, Li, out_channels); the caller slices off reference tokens.
        """
        # 1. Conditioning vector for adaLN.
        vec = self.time_in(timestep_embedding(timesteps, 256))
        if self.params.guidance_embed:
            if guidance is None:
                raise ValueError("this model embeds distilled guidance: pass a guidance value")
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256))
        vec = vec + self.vector_in(y)

        # 2. Token streams and rotary positions over [text, image].
        img = self.img_in(img)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))

        # 3. The blocks (through the step cache, if any), then the output layer on the image
        # tokens.
        if step_cache is None:
            x = self.blocks(img, txt, vec, pe)
        else:
            x = step_cache.run(self, img, txt, vec, pe)
        return self.final_layer(x[:, txt.shape[1] :], vec)

    def blocks(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor, start: int = 0) -> Tensor:
        """Double-stream blocks from index `start`, then single-stream ones over the joint
        sequence. img: (B, Li, D), txt: (B, Lt, D) -> (B, Lt + Li, D), text first."""
        for block in islice(self.double_blocks, start, None):
            img, txt = block(img, txt, vec, pe)
        x = torch.cat((txt, img), dim=1)
        for block in self.single_blocks:
            x = block(x, vec, pe)
        return x

    def init_weights(self) -> None:
        """Initialisation for training from scratch: Xavier linears, zeroed adaLN and output
        so every block starts as the identity and the model starts predicting zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embedder in (self.time_in, self.vector_in, self.guidance_in):
            if isinstance(embedder, MLPEmbedder):
                nn.init.normal_(embedder.in_layer.weight, std=0.02)
                nn.init.normal_(embedder.out_layer.weight, std=0.02)
        for block in self.double_blocks:
            nn.init.zeros_(block.img_mod.lin.weight)
            nn.init.zeros_(block.img_mod.lin.bias)
            nn.init.zeros_(block.txt_mod.lin.weight)
            nn.init.zeros_(block.txt_mod.lin.bias)
        for block in self.single_blocks:
            nn.init.zeros_(block.modulation.lin.weight)
            nn.init.zeros_(block.modulation.lin.bias)
        final = self.final_layer
        nn.init.zeros_(final.adaLN_modulation[1].weight)
        nn.init.zeros_(final.adaLN_modulation[1].bias)
        nn.init.zeros_(final.linear.weight)
        nn.init.zeros_(final.linear.bias)
