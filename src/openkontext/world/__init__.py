"""Shapes World: the synthetic world the `mini` model is trained and benchmarked on.

- `scene`: colours, shapes, cells, sizes; `Obj`, `Scene`, `Target` (scene + optional filter).
- `render`: deterministic 4x-supersampled rendering, the exact filters, change masks, tensors.
- `edits`: the edit kinds, which edits are allowed, their ground truth.
- `phrasings`: instruction and description phrasings, with held-out ones.
- `sampling`: random edits, generations, chains and training batches.
- `dataset`, `cli`: evaluation sets on disk (`openkontext world sample`).

The names below are loaded on first use, so that the CLI can import `openkontext.world.cli`
without torch (which `render` needs). `openkontext.world.render` is the module; its function is
`openkontext.world.render.render`.
"""

from openkontext.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "edits": ("KINDS", "Edit", "apply_edit", "edit_options", "reference"),
    "phrasings": ("describe", "phrase"),
    "render": (
        "apply_filter",
        "change_mask",
        "render_batch",
        "render_target",
        "render_targets",
        "to_tensor",
    ),
    "sampling": (
        "ChainSample",
        "EditBatch",
        "EditSample",
        "GenerationBatch",
        "GenerationSample",
        "edit_batch",
        "generation_batch",
        "sample_chain",
        "sample_edit",
        "sample_generation",
    ),
    "scene": (
        "CELLS",
        "COLORS",
        "FILTERS",
        "SHAPES",
        "SIZES",
        "Obj",
        "Scene",
        "SceneError",
        "Target",
        "random_scene",
    ),
})
