"""Does the model copy what an edit leaves alone? A probe of the Kontext skill a mini model
must learn first, measured per edit kind on fresh Shapes World edits.

At t = 1 the target tokens are pure noise, so everything the model knows about the unchanged
parts of the picture comes from the reference tokens. For the tokens whose 16 x 16 pixel patch
the edit does not touch, the probe compares the model's one-step estimate of the clean latent
(x0 = x_t - t v) with the target latent, and prints beside it the error of simply copying the
source latent (what a perfect copier would get) and the error with a reference taken from
another edit (what the model gets without using the reference at all). Then, on background
edits, whether the output's background has the colour the instruction asked for: a test of
whether colour words get through the text encoder.

    .venv/bin/python benchmarks/mini/copy_probe.py [--weights DIR] [--cases 128] [--t 1.0]
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import torch
import torch.nn.functional as F

from openkontext.packing import References, image_ids, pack, text_ids
from openkontext.sampling import run_tensors
from openkontext.weights import load_model
from openkontext.world.render import PALETTE
from openkontext.world.sampling import edit_batch, edit_batch_from, sample_edit
from openkontext.world.scene import COLORS


@torch.no_grad()
def probe(model, cases: int, t: float, seed: int = 11) -> dict[str, dict[str, float]]:
    """Per kind: mean squared error on unchanged tokens of the model's x0 (right reference and
    another edit's reference) and of copying the source latent; share of unchanged tokens."""
    size = model.preset.native_size
    batch = edit_batch(random.Random(seed), cases, size)
    gen = torch.Generator().manual_seed(seed)
    target = pack(model.ae.encode(batch.target))
    source = model.ae.encode(batch.source)
    b, n, _ = target.shape
    h = w = size // model.ae.params.downsample
    txt, vec = model.text.encode(batch.instructions)
    noise = torch.randn(target.shape, generator=gen)
    times = torch.full((b,), t)
    x = (1 - t) * target + t * noise
    ids = image_ids(b, h, w)

    def x0_error(reference: torch.Tensor) -> torch.Tensor:
        refs = References.from_latents([reference])
        v = model.flux(img=torch.cat((x, refs.tokens), 1), img_ids=torch.cat((ids, refs.ids), 1),
                       txt=txt, txt_ids=text_ids(b, txt.shape[1]), timesteps=times, y=vec)[:, :n]
        return (x - t * v - target).pow(2).mean(-1)  # (B, tokens)

    right, other = x0_error(source), x0_error(source.roll(1, 0))
    copy = (pack(source) - target).pow(2).mean(-1)
    patch = size // h * 2  # pixels per token side
    untouched = F.avg_pool2d(batch.mask.float()[:, None], patch).flatten(1) == 0  # (B, tokens)
    rows: dict[str, list] = defaultdict(list)
    for i, kind in enumerate(batch.kinds):
        keep = untouched[i]
        if keep.any():
            rows[kind].append((right[i][keep].mean(), other[i][keep].mean(), copy[i][keep].mean(),
                               keep.float().mean()))
    return {
        kind: dict(zip(("model", "other_reference", "copy_source", "share_unchanged"),
                       (round(torch.stack(col).mean().item(), 4) for col in zip(*v, strict=True)),
                       strict=True))
        for kind, v in sorted(rows.items())
    }


@torch.no_grad()
def background_colours(model, cases: int = 32, seed: int = 7) -> tuple[int, int]:
    """Background edits ("paint the background cyan"): how often the output's background (the
    median of its top-left 6 x 6 pixels, which no object reaches) is nearest to the asked
    colour, and how often to the source's. -> (asked, kept)."""
    size = model.preset.native_size
    samples = [sample_edit(random.Random(seed + i), kinds=["background"]) for i in range(cases)]
    batch = edit_batch_from(samples, size)
    out = run_tensors(model, batch.instructions, list(range(cases)), size, size,
                      model.preset.default_steps, None, references=[batch.source])
    corner = ((out[:, :, :6, :6].clamp(-1, 1) + 1) * 127.5).flatten(2).median(-1).values
    names = list(COLORS)
    palette = torch.tensor(PALETTE, dtype=torch.float32)
    nearest = [names[int(torch.cdist(c[None], palette).argmin())] for c in corner]
    asked = sum(n == s.target.scene.background for n, s in zip(nearest, samples, strict=True))
    kept = sum(n == s.source.background for n, s in zip(nearest, samples, strict=True))
    return asked, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the shipped one)")
    parser.add_argument("--cases", type=int, default=128)
    parser.add_argument("--t", type=float, default=1.0, help="noise level of the probe, 0..1")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.weights)
    figures = probe(model, args.cases, args.t)
    print(f"x0 mean squared error on unchanged tokens at t = {args.t:g} (normalised latent units)")
    print(f"{'kind':10s} {'model':>8s} {'other ref':>10s} {'copy src':>9s} {'unchanged':>10s}")
    for kind, f in figures.items():
        print(f"{kind:10s} {f['model']:8.4f} {f['other_reference']:10.4f} "
              f"{f['copy_source']:9.4f} {f['share_unchanged']:10.0%}")
    asked, kept = background_colours(model)
    print(f"background edits: the asked colour in {asked} of 32, the source's kept in {kept} "
          "(chance: about 3 of 32)")


if __name__ == "__main__":
    main()
