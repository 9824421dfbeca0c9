"""Sessions: a conversational editor's history kept on the server (docs/web.md).

A session is a tree of turns (session.py); each turn is made by a job submitted exactly as
`POST /v1/flux-kontext-<tier>` submits one (`jobs.submit_job`: the same checks, admission and
limits), editing the parent turn's picture, with input_image_2..4 as references. Handlers read
and change sessions through `SessionStore`; every read first brings finished turns up to date.
Pictures are served behind signed URLs, like results, so an `<img src>` needs no key.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import unicodedata
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from openkontext import imaging
from openkontext.files import PRIVATE, atomic_write
from openkontext.serve import urls
from openkontext.serve.deps import KeyHash, Services, ServicesDep
from openkontext.serve.inputs import FieldError, read_image
from openkontext.serve.routers.jobs import cancel_job, submit_job
from openkontext.serve.schemas import (
    AUTH,
    MoveHead,
    NewSession,
    Rename,
    SessionList,
    SessionView,
    TurnRequest,
    TurnsMade,
    problems,
)
from openkontext.serve.sessions import MIME, SessionRow, TooMany, reference_name
from openkontext.serve.views import session_body, session_summary
from openkontext.session import PENDING, SessionError

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
SessionId = Annotated[str, Path(description="the session's id")]
# What a turn records of its request, besides instruction, seed and parent.
TURN_SETTINGS = ("steps", "guidance", "aspect_ratio", "width", "height", "output_format",
                 "output_quality", "safety_tolerance", "prompt_upsampling", "style_preset", "speed")
NO_SESSION = "no such session"
NOT_JSON = "the body cannot be read as JSON text (it is not UTF-8)"
ZIP_CHUNK = 1 << 16


def _responses(**described: str) -> dict:
    return problems(**AUTH, s404=NO_SESSION, **described)


def _session(services: Services, session_id: str, key_hash: str) -> SessionRow:
    """The caller's session with its finished turns brought up to date; 404 if there is none."""
    row = services.sessions.get(session_id, key_hash)
    row = row and services.sessions.settle(row)
    if row is None:
        raise HTTPException(404, NO_SESSION)
    return row


def _view(services: Services, request: Request, row: SessionRow) -> dict:
    return session_body(row, urls.base_url(request, services.settings), services.settings,
                        services.store)


# -- sessions ----------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=SessionView, summary="Start a session",
             responses={422: {"description": "input_image is not an image we can take"},
                        **problems(**AUTH, s400=NOT_JSON,
                                   s409="the key has max_sessions_per_key sessions, or the "
                                        "server keeps no pictures (zero_retention)",
                                   s413="the body is over the server's limit")})
def create(body: NewSession, request: Request, services: ServicesDep, key_hash: KeyHash):
    if services.settings.zero_retention:
        raise HTTPException(409, "this server keeps no pictures (zero_retention), so it keeps "
                                 "no sessions; use the job API, /v1/flux-kontext-<tier>")
    original = None
    if body.input_image is not None:
        original, _ = read_image("input_image", body.input_image, services.settings)
    try:
        row = services.sessions.create(key_hash, body.name, original)
    except TooMany as e:
        raise HTTPException(409, str(e)) from None
    return _view(services, request, row)


@router.get("", response_model=SessionList,
            summary="The caller's sessions, most recently updated first",
            responses=problems(**AUTH))
def list_sessions(request: Request, services: ServicesDep, key_hash: KeyHash):
    base = urls.base_url(request, services.settings)
    rows = services.sessions.for_key(key_hash)
    return SessionList(sessions=[session_summary(r, base, services.settings) for r in rows])


@router.get("/{session_id}", response_model=SessionView, summary="A session and its turns",
            responses=_responses())
def get_session(session_id: SessionId, request: Request, services: ServicesDep,
                key_hash: KeyHash):
    return _view(services, request, _session(services, session_id, key_hash))


@router.patch("/{session_id}", response_model=SessionView, summary="Rename a session",
              responses=_responses(s400=NOT_JSON))
def rename(session_id: SessionId, body: Rename, request: Request, services: ServicesDep,
           key_hash: KeyHash):
    _session(services, session_id, key_hash)

    def name(row: SessionRow) -> None:
        row.name = body.name

    row = services.sessions.update(session_id, key_hash, name)
    if row is None:
        raise HTTPException(404, NO_SESSION)
    return _view(services, request, row)


@router.delete("/{session_id}", status_code=204, response_class=Response,
               summary="Delete a session, its pictures, and cancel its pending turns",
               responses=_responses())
def delete(session_id: SessionId, services: ServicesDep, key_hash: KeyHash):
    row = services.sessions.delete(session_id, key_hash)
    if row is None:
        raise HTTPException(404, NO_SESSION)
    for job_id in {t.job_id for t in row.tree.turns if t.status == PENDING and t.job_id}:
        cancel_job(services, job_id)
    return Response(status_code=204)


# -- turns -------------------------------------------------------------------------------------


@router.post("/{session_id}/turns", status_code=202, response_model=TurnsMade,
             summary="Add turns: one job, one turn per image",
             responses={422: {"description": "a field is invalid; the detail names it"},
                        **_responses(
                            s400=NOT_JSON,
                            s409="the parent turn is not Ready, or the session has "
                                 "max_session_turns turns",
                            s413="the body is over the server's limit (max_body_bytes)",
                            s429="the queue, or the key's share of it, is full; see "
                                 "Retry-After",
                            s503="the model failed to load")})
def add_turns(session_id: SessionId, body: TurnRequest, request: Request,
              services: ServicesDep, key_hash: KeyHash):
    s, sessions = services.settings, services.sessions
    row = _session(services, session_id, key_hash)
    # 1. The fields a job does not have, and the picture the turn edits.
    if body.input_image is not None:
        raise FieldError("input_image", "a turn edits its parent turn's picture: choose it "
                                        "with parent; extra pictures go in input_image_2..4")
    tier = body.tier or ("pro" if "pro" in s.tiers else next(iter(s.tiers)))
    if tier not in s.tiers:
        raise FieldError("tier", f"unknown tier {tier!r}; this server has "
                                 f"{', '.join(s.tiers)}")
    facts = services.worker.facts
    if (body.style_preset is not None and facts is not None
            and body.style_preset not in facts.style_presets):
        raise FieldError("style_preset", f"unknown style_preset {body.style_preset!r}; choose "
                                         f"one of {', '.join(facts.style_presets)}")
    parent = row.tree.head if body.parent is None else body.parent
    first = _parent_picture(services, row, parent)
    if first is None and body.images():
        raise FieldError(body.images()[0][0], "references need a picture to edit, and this "
                                              "turn starts from text (turn 0 has no picture)")
    if len(row.tree.turns) + body.num_images > s.max_session_turns:
        raise HTTPException(409, f"this session has {len(row.tree.turns)} turns; the server's "
                                 f"limit is {s.max_session_turns} (max_session_turns)")
    # 2. The job, checked and admitted as any other.
    base = urls.base_url(request, s)
    job, inputs = submit_job(services, tier, body, base, key_hash, first=first,
                             params={"session": {"id": row.id, "parent": parent}})
    # 3. Its references kept with the session, then its turns.
    references = []
    for data in inputs[1 if first else 0:]:
        name = reference_name(data)
        if not (sessions.folder(row.id) / name).is_file():
            atomic_write(sessions.folder(row.id) / name, data, mode=PRIVATE)
        references.append(name)
    params = job.params
    settings = {"tier": tier, **{k: params.get(k) for k in TURN_SETTINGS}}
    try:
        added = sessions.add_turns(row.id, key_hash, job, parent, settings, references)
    except TooMany as e:
        cancel_job(services, job.id)
        raise HTTPException(409, str(e)) from None
    if added is None:  # deleted meanwhile: its job and the references written go too
        cancel_job(services, job.id)
        shutil.rmtree(sessions.folder(row.id), ignore_errors=True)
        raise HTTPException(404, NO_SESSION)
    row, numbers = added
    row = sessions.settle(row) or row  # a job refused at once (text policy) is settled now
    return TurnsMade(session=_view(services, request, row), turns=numbers)


def _parent_picture(services: Services, row: SessionRow,
                    parent: int) -> tuple[bytes, tuple[int, int]] | None:
    """The picture a turn from `parent` edits, with its size (None: a generation); a parent
    that does not exist is 422, one without a picture yet 409."""
    tree = row.tree
    if parent == 0:
        name = tree.original_file
        if name is None:
            return None
    else:
        try:
            turn = tree.turn(parent)
        except SessionError as e:
            raise FieldError("parent", str(e)) from None
        if not turn.ready:
            raise HTTPException(409, f"turn {parent} is {turn.status}, not Ready: it has no "
                                     "picture to edit yet")
        name = turn.file
    data = (services.sessions.folder(row.id) / name).read_bytes()
    try:
        size = imaging.load_image(data, services.settings.image_limits).size
    except imaging.ImageError as e:
        raise FieldError("parent", f"turn {parent}'s picture cannot be edited on this "
                                   f"server: {e}") from None
    return data, size


@router.post("/{session_id}/head", response_model=SessionView,
             summary="Move the head: undo, or branch from an earlier turn",
             responses=_responses(s400=NOT_JSON))
def move_head(session_id: SessionId, body: MoveHead, request: Request, services: ServicesDep,
              key_hash: KeyHash):
    _session(services, session_id, key_hash)

    def branch(row: SessionRow) -> None:
        try:
            row.tree.branch(body.turn)
        except SessionError as e:
            raise FieldError("turn", str(e)) from None

    row = services.sessions.update(session_id, key_hash, branch)
    if row is None:
        raise HTTPException(404, NO_SESSION)
    return _view(services, request, row)


@router.post("/{session_id}/turns/{number}/cancel", response_model=SessionView,
             summary="Cancel a pending turn (and its siblings of the same job)",
             responses=_responses())
def cancel_turn(session_id: SessionId, number: int, request: Request, services: ServicesDep,
                key_hash: KeyHash):
    row = _session(services, session_id, key_hash)
    try:
        turn = row.tree.turn(number)
    except SessionError as e:
        raise HTTPException(404, str(e)) from None
    if turn.status == PENDING and turn.job_id:
        cancel_job(services, turn.job_id)
        row = _session(services, session_id, key_hash)
    return _view(services, request, row)


# -- files -------------------------------------------------------------------------------------


@router.get("/{session_id}/zip", response_class=StreamingResponse,
            summary="Download session.json and every picture as a zip",
            responses={200: {"content": {"application/zip": {}},
                             "description": "the zip"}, **_responses()})
def download_zip(session_id: SessionId, services: ServicesDep, key_hash: KeyHash):
    row = _session(services, session_id, key_hash)
    # In memory up to 16 MiB, then on disk; closed by the response once sent.
    out = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115
    try:
        services.sessions.write_zip(row, out)
        out.seek(0)
    except BaseException:
        out.close()
        raise

    def chunks():
        with out:
            while chunk := out.read(ZIP_CHUNK):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/zip",
                             headers={"Content-Disposition": _attachment(row)})


def _attachment(row: SessionRow) -> str:
    """`attachment` with the session's name as the file name: plain ASCII for every client,
    and the name as typed (RFC 5987) for those that read `filename*`."""
    typed = re.sub(r'[\x00-\x1f\x7f/\\"]+', "_", row.name).strip(" .") or f"session-{row.id[:8]}"
    ascii_ = unicodedata.normalize("NFKD", typed).encode("ascii", "ignore").decode()
    plain = re.sub(r"[^A-Za-z0-9._ -]+", "_", ascii_).strip(" ._")[:100] or f"session-{row.id[:8]}"
    return f"attachment; filename=\"{plain}.zip\"; filename*=UTF-8''{quote(typed + '.zip')}"


@router.get("/{session_id}/images/{name}", response_class=FileResponse,
            summary="A session's picture (signed URL from the session)",
            responses={200: {"content": {mime: {} for mime in sorted(set(MIME.values()))},
                             "description": "the picture"},
                       **problems(s403="bad signature", s404="no such picture",
                                  s410="the link expired; read the session for a fresh one")})
def image(session_id: SessionId, name: str, services: ServicesDep,
          exp: Annotated[int, Query()], sig: Annotated[str, Query(max_length=128)]):
    s = services.settings
    problem = urls.verify(urls.session_image_path(session_id, name), exp, sig,
                          s.signing_secret())
    if problem == "invalid":
        raise HTTPException(403, "invalid signature")
    if problem == "expired":
        raise HTTPException(410, "this link has expired; read the session for a fresh one")
    row = services.sessions.get(session_id, None)
    path = services.sessions.folder(session_id) / name
    if row is None or name not in row.tree.files() or not path.is_file():
        raise HTTPException(404, "no such picture")
    return FileResponse(path, media_type=MIME[name.rsplit(".", 1)[-1]],
                        headers={"Cache-Control": "private, max-age=600",
                                 "X-Content-Type-Options": "nosniff"})
