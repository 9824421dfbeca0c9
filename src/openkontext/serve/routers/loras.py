"""The LoRAs a request may name (`GET /v1/loras`): the `NAME.safetensors` files of the
operator's `loras_dir`; an empty list when none is configured."""

from __future__ import annotations

from fastapi import APIRouter

from openkontext.serve.deps import KeyHash, ServicesDep
from openkontext.serve.schemas import AUTH, LoraInfo, LoraList, problems

router = APIRouter(prefix="/v1", tags=["loras"])


@router.get("/loras", response_model=LoraList, summary="LoRAs a request may name",
            responses=problems(**AUTH))
def list_loras(services: ServicesDep, key_hash: KeyHash) -> LoraList:
    """Each file is read once (and again when it changes). A file that cannot be read as a
    LoRA is left out, with a warning in the server's log, rather than failing the listing; a
    request naming it gets 422 with the reason."""
    return LoraList(loras=[LoraInfo(**row) for row in services.loras.describe()])
