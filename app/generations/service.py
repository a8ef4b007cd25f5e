"""Index generations: a model or chunking change without downtime. A new generation is
built beside the live one, becomes live in one transaction (or waits, ready, for an admin),
can be cancelled, and the last switch can be rolled back. Functions flush and ask for their
jobs (`app.jobs`); the caller's unit of work commits and so sends them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, func, select, text
from sqlalchemy.orm import Session

from app import jobs
from app.accounts.service import Account
from app.config import Settings
from app.documents.reindex import Progress
from app.errors import Conflict, Invalid, NotFound
from app.ingest.index import GENERATION_LOCK, create_generation, live_generation
from app.models import (
    IN_FLIGHT,
    PENDING_STATES,
    Chunk,
    Collection,
    Document,
    DocumentStatus,
    EvalRun,
    GenerationState,
    IndexGeneration,
)

log = logging.getLogger(__name__)


def start_generation(
    session: Session,
    settings: Settings,
    *,
    model: str,
    chunk_tokens: int,
    overlap_tokens: int,
    auto_switch: bool,
    actor: Account | None,
) -> IndexGeneration:
    """A new generation beside the live one, with its own HNSW index for its dimension. The
    live one keeps serving; `build_generation` fills the new one in the background."""
    from app.ingest.embed import get_embedder

    if session.scalar(select(exists().where(IndexGeneration.state.in_(PENDING_STATES)))):
        raise Conflict("a generation is already being built: cancel it or make it live first")
    if not 32 <= chunk_tokens <= 8192 or not 0 <= overlap_tokens < chunk_tokens // 2:
        raise Invalid("chunk tokens 32 to 8192; overlap under half the chunk")
    try:
        dimension = get_embedder(model).dimension
    except Exception as err:
        raise Invalid(f"cannot load the embedding model {model!r}: {err}") from err
    generation = create_generation(
        session,
        model=model,
        dimension=dimension,
        settings=settings.model_copy(
            update={"chunk_tokens": chunk_tokens, "chunk_overlap_tokens": overlap_tokens}
        ),
        state=GenerationState.building,
    )
    generation.auto_switch = auto_switch
    generation.created_by = actor.id if actor else None
    generation.documents_total = session.scalar(
        select(func.count()).where(Document.status == DocumentStatus.indexed)
    )
    session.flush()
    jobs.enqueue(session, jobs.BUILD_GENERATION, generation.id)
    return generation


def _missing(generation_id: int):
    has_chunks = exists().where(
        Chunk.document_id == Document.id, Chunk.generation_id == generation_id
    )
    gave_up = select(func.unnest(IndexGeneration.failed_documents)).where(
        IndexGeneration.id == generation_id
    )
    return (Document.status == DocumentStatus.indexed) & ~has_chunks & Document.id.not_in(gave_up)


def give_up_on(session: Session, generation_id: int, document_ids: list[int]) -> None:
    """Documents the builder could not add: it stops trying; the panel lists them."""
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is not None and document_ids:
        generation.failed_documents = sorted({*generation.failed_documents, *document_ids})


def count_missing(session: Session, generation_id: int) -> int:
    """How many indexed documents have no chunks in the generation yet."""
    return int(session.scalar(select(func.count()).where(_missing(generation_id))) or 0)


def missing_documents(session: Session, generation_id: int, limit: int) -> list[int]:
    """Indexed documents that have no chunks in the generation yet."""
    return list(
        session.scalars(
            select(Document.id).where(_missing(generation_id)).order_by(Document.id).limit(limit)
        )
    )


def generation_progress(session: Session, generation: IndexGeneration) -> Progress:
    built = session.scalar(
        select(func.count(func.distinct(Chunk.document_id))).where(
            Chunk.generation_id == generation.id
        )
    )
    missing = session.scalar(select(func.count()).where(_missing(generation.id)))
    return Progress(int(built or 0), int(built or 0) + int(missing or 0))


def complete_generation(session: Session, generation_id: int) -> str:
    """When nothing is missing and nothing is in flight: make it live (auto switch) or ready.
    Returns the generation's state."""
    session.execute(select(func.pg_advisory_xact_lock(GENERATION_LOCK)))
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is None or generation.state != GenerationState.building:
        return generation.state if generation else "gone"
    in_flight = session.scalar(select(exists().where(Document.status.in_(IN_FLIGHT))))
    if in_flight or missing_documents(session, generation_id, 1):
        return GenerationState.building
    if generation.auto_switch:
        switch_to(session, generation)
    else:
        generation.state = GenerationState.ready
    return generation.state


def switch_to(session: Session, generation: IndexGeneration) -> IndexGeneration | None:
    """In one transaction: the old live generation retires and this one serves. Searches
    read the live generation once per query, so each sees the old index or the new one."""
    if generation.state not in PENDING_STATES:
        raise Conflict(f"generation {generation.id} is {generation.state}")
    missing = count_missing(session, generation.id)
    if missing:
        raise Conflict(
            f"generation {generation.id} is not complete yet: {missing} indexed document(s) "
            "have no chunks in it"
        )
    old = live_generation(session)
    if old is not None:
        old.state = GenerationState.retired
        old.retired_at = datetime.now(UTC)
        session.flush()  # the one-live unique index
    generation.state = GenerationState.live
    generation.activated_at = datetime.now(UTC)
    session.flush()
    log.info("generation %s is live (was %s)", generation.id, old.id if old else None)
    # The retired one can be rolled back to for RETIRED_KEEP_S; its space is freed after.
    jobs.enqueue(session, jobs.DROP_RETIRED, delay_s=RETIRED_KEEP_S + 60)
    return old


def resume_building(session: Session, generation: IndexGeneration) -> int:
    """A ready generation that lacks documents (indexed while it was becoming ready) goes
    back to building, for `build_generation` to add them. Returns how many it lacks."""
    if generation.state != GenerationState.ready:
        return 0
    missing = count_missing(session, generation.id)
    if missing:
        generation.state = GenerationState.building
        session.flush()
        jobs.enqueue(session, jobs.BUILD_GENERATION, generation.id)
    return missing


class Resumed(Exception):
    """The switch was refused: the generation went back to building to add documents."""

    def __init__(self, generation_id: int, missing: int):
        super().__init__(
            f"generation {generation_id} lacks {missing} document(s) indexed since it became "
            "ready: it is being brought up to date; switch to it when it is ready again"
        )
        self.missing = missing


def switch_or_resume(session: Session, generation_id: int) -> IndexGeneration | None:
    """An admin's switch: the generation becomes live (returns the one it retires), or, when
    documents were indexed since it became ready, it goes back to building to add them and
    `Resumed` says the switch must wait (the caller commits the resumed build)."""
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is None:
        raise NotFound(f"no generation {generation_id}")
    missing = resume_building(session, generation)
    if missing:
        raise Resumed(generation_id, missing)
    return switch_to(session, generation)


RETIRED_KEEP_S = 3600  # a retired generation can be rolled back to for an hour


def roll_back_target(session: Session) -> IndexGeneration | None:
    """The generation retired most recently, if its chunks are still all there."""
    previous = session.scalars(
        select(IndexGeneration)
        .where(IndexGeneration.state == GenerationState.retired)
        .order_by(IndexGeneration.retired_at.desc().nulls_last())
        .limit(1)
    ).first()
    if previous is None or missing_documents(session, previous.id, 1):
        return None
    return previous


def roll_back(session: Session) -> IndexGeneration:
    """Undo the last switch: the generation retired most recently serves again (its chunks
    are kept for RETIRED_KEEP_S after it retired)."""
    session.execute(select(func.pg_advisory_xact_lock(GENERATION_LOCK)))
    previous = roll_back_target(session)
    if previous is None:
        raise Conflict("no retired generation is complete enough to roll back to")
    previous.state = GenerationState.ready
    switch_to(session, previous)
    return previous


def cancel_generation(session: Session, generation_id: int) -> IndexGeneration:
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is None or generation.state not in PENDING_STATES:
        raise Conflict("only a generation being built (or ready) can be cancelled")
    generation.state = GenerationState.cancelled
    jobs.enqueue(session, jobs.DROP_RETIRED)
    return generation


def _done_with():
    """Generations that will not serve again: cancelled, or retired over RETIRED_KEEP_S
    ago (past the roll back)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=RETIRED_KEEP_S)
    return (IndexGeneration.state == GenerationState.cancelled) | (
        (IndexGeneration.state == GenerationState.retired) & (IndexGeneration.retired_at < cutoff)
    )


def droppable(session: Session) -> list[int]:
    """Generations done with whose chunks or vector index may still take space."""
    candidates = session.scalars(select(IndexGeneration.id).where(_done_with())).all()
    return [
        g
        for g in candidates
        if session.scalar(select(exists().where(Chunk.generation_id == g)))
        or session.scalar(text("SELECT to_regclass(:name)"), {"name": f"chunks_embedding_g{g}"})
    ]


def kept_generations(session: Session) -> list[IndexGeneration]:
    """The generations that can serve now or later: live, pending, or retired within
    RETIRED_KEEP_S (a roll back returns to one)."""
    return list(session.scalars(select(IndexGeneration).where(~_done_with())))


def drop_generation_chunks(session: Session, generation_id: int) -> int:
    """Free a retired or cancelled generation's space: its chunks and its vector index."""
    generation = session.get(IndexGeneration, generation_id)
    if generation is None or generation.state not in (
        GenerationState.retired,
        GenerationState.cancelled,
    ):
        return 0
    removed = session.execute(delete(Chunk).where(Chunk.generation_id == generation_id))
    session.execute(text(f"DROP INDEX IF EXISTS chunks_embedding_g{int(generation_id)}"))
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]


def overview(session: Session) -> dict:
    """What the admin panel shows: the last ten generations, the live one, the one being
    built or ready, its progress and its comparison with the live one (when run), what a
    roll back would return to, and the collections that have an eval set."""
    generations = session.scalars(
        select(IndexGeneration).order_by(IndexGeneration.id.desc()).limit(10)
    ).all()
    pending = next((g for g in generations if g.state in PENDING_STATES), None)
    live = next((g for g in generations if g.state == GenerationState.live), None)
    comparison = None
    if pending is not None and live is not None:
        runs = session.scalars(
            select(EvalRun).where(EvalRun.kind == "compare").order_by(EvalRun.id.desc()).limit(20)
        )
        wanted = [live.id, pending.id]
        comparison = next((r for r in runs if r.settings.get("generations") == wanted), None)
    return {
        "generations": generations,
        "live": live,
        "pending": pending,
        "pending_progress": generation_progress(session, pending) if pending else None,
        "comparison": comparison,
        "roll_back_to": roll_back_target(session) if pending is None else None,
        "eval_collections": session.scalars(
            select(Collection).where(Collection.eval_set.is_not(None))
        ).all(),
    }


def request_comparison(session: Session, generation_id: int, collection_id: int) -> None:
    """Ask for the generation to be compared with the live one on the collection's eval
    set (a job: the result appears in the panel as an eval run)."""
    live = live_generation(session)
    if live is None:
        raise Invalid("there is no live generation to compare with")
    jobs.enqueue(session, jobs.COMPARE_GENERATIONS, collection_id, [live.id, generation_id])
