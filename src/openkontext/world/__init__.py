"""Shapes World: the synthetic world the `mini` model is trained and benchmarked on.

- `scene`: colours, shapes, cells, sizes; `Obj`, `Scene`, `Target` (scene + optional filter).
- `render`: deterministic 4x-supersampled rendering, the exact filters, change masks, tensors.
- `edits`: the edit kinds, which edits are allowed, their ground truth.
- `phrasings`: instruction and description phrasings, with held-out ones.
- `sampling`: random edits, generations, chains and training batches.
- `dataset`, `cli`: evaluation sets on disk (`openkontext world sample`).
"""

from openkontext.world.edits import KINDS, Edit, apply_edit, edit_options, reference
from openkontext.world.phrasings import describe, phrase
from openkontext.world.render import (
    apply_filter,
    change_mask,
    render,
    render_batch,
    render_target,
    render_targets,
    to_tensor,
)
from openkontext.world.sampling import (
    ChainSample,
    EditBatch,
    EditSample,
    GenerationBatch,
    GenerationSample,
    edit_batch,
    generation_batch,
    sample_chain,
    sample_edit,
    sample_generation,
)
from openkontext.world.scene import (
    CELLS,
    COLORS,
    FILTERS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    SceneError,
    Target,
    random_scene,
)

__all__ = [
    "CELLS", "COLORS", "FILTERS", "KINDS", "SHAPES", "SIZES", "ChainSample", "Edit",
    "EditBatch", "EditSample", "GenerationBatch", "GenerationSample", "Obj", "Scene",
    "SceneError", "Target", "apply_edit", "apply_filter", "change_mask", "describe",
    "edit_batch", "edit_options", "generation_batch", "phrase", "random_scene", "reference",
    "render", "render_batch", "render_target", "render_targets", "sample_chain", "sample_edit",
    "sample_generation", "to_tensor",
]
