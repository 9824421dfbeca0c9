"""What the API checks a request against before it queues a job, read from the loaded model.

The routers refuse at submission (422 naming the field) what the model would refuse when it
plans the job: a size or amount of work over its limits, an unknown style preset, a LoRA that
does not fit. The local worker derives these facts from its pipeline once loaded; the Ray
executor, whose process holds no model, asks a replica for them (ray_executor.py). Until then
(`facts` None, the model loading) the checks are left to whoever runs the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from openkontext.model import ModelPreset
from openkontext.model.lora import linear_shapes
from openkontext.pipeline import Kontext


@dataclass(frozen=True)
class ModelFacts:
    """Small and picklable: a replica sends it to the API processes."""

    preset: ModelPreset
    style_presets: tuple[str, ...]
    linear_layers: dict[str, tuple[int, int]]  # module -> (out, in): what check_fits needs

    @classmethod
    def of(cls, kontext: Kontext) -> ModelFacts:
        return cls(kontext.model.preset, tuple(kontext.style_presets),
                   linear_shapes(kontext.model.flux))
