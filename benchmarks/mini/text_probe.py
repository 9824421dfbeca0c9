"""Which text encoder carries the colour words? A linear probe, run side by side.

For the three edit kinds whose instruction names the colour to paint (background, recolor,
add), a multinomial logistic regression is fitted from an encoder's pooled vector (`y`, what
modulates every transformer block) to that colour, on instructions with training phrasings, and
scored on fresh instructions with training phrasings and with the held-out phrasings the
mini model never sees. The same is done from the mean of the token states. A vector that
cannot tell "red" from "blue" linearly, or does so only on the phrasings it was trained on,
gives the transformer little to work with.

    .venv/bin/python benchmarks/mini/text_probe.py [--byte-weights DIR] [--train 1500] [--test 500]

--byte-weights names a mini export with a byte-level text encoder: the shipped one up to
6,000 steps (`git show 89495f8:src/openkontext/embedded/mini.safetensors`, likewise mini.json,
into a folder). Without it only the sentence encoder of the current preset is probed.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from openkontext.model import build_text_encoder, get_preset
from openkontext.world.sampling import sample_edit
from openkontext.world.scene import COLORS

KINDS = ("background", "recolor", "add")
NAMES = list(COLORS)


def painted_colour(sample) -> str:
    edit = sample.edit
    return edit.new.color if edit.kind == "add" else edit.value


def instructions(split: str, count: int, seed: int) -> tuple[list[str], torch.Tensor]:
    rng = random.Random(seed)
    samples = [sample_edit(rng, kinds=list(KINDS), split=split) for _ in range(count)]
    labels = torch.tensor([NAMES.index(painted_colour(s)) for s in samples])
    return [s.instruction for s in samples], labels


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3):
    """Standardised features -> softmax regression (LBFGS). Returns a predict function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], len(NAMES), requires_grad=True)
    b = torch.zeros(len(NAMES), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)
    z = (x - mean) / std

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda v: (((v - mean) / std) @ w + b).argmax(-1).detach()


@torch.no_grad()
def features(encoder, prompts: list[str]) -> dict[str, torch.Tensor]:
    out = {"pooled": [], "token mean": []}
    for i in range(0, len(prompts), 128):
        txt, vec = encoder.encode(prompts[i : i + 128])
        out["pooled"].append(vec.float())
        out["token mean"].append(txt.float().mean(1))
    return {k: torch.cat(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--byte-weights", default=None, help="a byte-text mini export folder")
    parser.add_argument("--train", type=int, default=1500, help="instructions to fit on")
    parser.add_argument("--test", type=int, default=500, help="instructions per test split")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = {
        "fit": instructions("train", args.train, 1),
        "train phrasings": instructions("train", args.test, 2),
        "held-out phrasings": instructions("heldout", args.test, 3),
    }
    encoders = {}
    if args.byte_weights:
        from openkontext.weights import load_model

        encoders["byte (trained with mini)"] = load_model(args.byte_weights).text
    encoders["all-MiniLM-L6-v2 (frozen)"] = build_text_encoder(get_preset("mini").text)
    print(f"colour named by background/recolor/add instructions, {len(NAMES)} colours "
          f"(chance {1 / len(NAMES):.0%}); probe fitted on {args.train} instructions")
    print(f"{'encoder':28s} {'features':11s} {'train phrasings':>16s} {'held-out':>9s} "
          f"{'ms/prompt':>10s}")
    for name, encoder in encoders.items():
        started = time.perf_counter()
        feats = {split: features(encoder, prompts) for split, (prompts, _) in data.items()}
        ms = 1000 * (time.perf_counter() - started) / sum(len(p) for p, _ in data.values())
        for kind in ("pooled", "token mean"):
            predict = fit_probe(feats["fit"][kind], data["fit"][1])
            acc = [(predict(feats[s][kind]) == data[s][1]).float().mean().item()
                   for s in ("train phrasings", "held-out phrasings")]
            print(f"{name:28s} {kind:11s} {acc[0]:16.1%} {acc[1]:9.1%} {ms:10.2f}")


if __name__ == "__main__":
    main()
