"""Who may read which collection: grants to a user or a group, and the one function every
interface (pages, JSON API, CLI, evals) asks which collections a search may see."""

from __future__ import annotations

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from app.accounts.service import Account, group_named, user_by_email
from app.collections.service import get_collection
from app.errors import Invalid
from app.models import Collection, CollectionMember, Group, GroupMember, User


def readable_collections(session: Session, user: Account | None) -> list[int] | None:
    """Collection ids the user may read; None means all (admins, and the CLI which runs with
    the database's own credentials)."""
    if user is None or user.is_admin:
        return None
    groups = select(GroupMember.group_id).where(GroupMember.user_id == user.id)
    return list(
        session.scalars(
            select(CollectionMember.collection_id)
            .where(or_(CollectionMember.user_id == user.id, CollectionMember.group_id.in_(groups)))
            .distinct()
        )
    )


def can_read(session: Session, user: Account | None, collection_id: int) -> bool:
    readable = readable_collections(session, user)
    return readable is None or collection_id in readable


def add_member(
    session: Session,
    collection: Collection,
    *,
    user: User | None = None,
    group: Group | None = None,
) -> None:
    """Let a user, or every member of a group, read the collection."""
    if user is not None and group is None:
        same = CollectionMember.user_id == user.id
    elif group is not None and user is None:
        same = CollectionMember.group_id == group.id
    else:
        raise Invalid("add a user or a group")
    found = session.scalar(
        select(CollectionMember).where(CollectionMember.collection_id == collection.id, same)
    )
    if found is None:
        session.add(
            CollectionMember(
                collection_id=collection.id,
                user_id=user.id if user else None,
                group_id=group.id if group else None,
            )
        )
        session.flush()


def grant(session: Session, collection: Collection, email: str, group: str) -> None:
    """Let a user (by email), a group (by name), or both, read the collection."""
    if not email.strip() and not group.strip():
        raise Invalid("name a user (email) or a group")
    if email.strip():
        add_member(session, collection, user=user_by_email(session, email))
    if group.strip():
        add_member(session, collection, group=group_named(session, group))


def remove_member(session: Session, member_id: int) -> None:
    session.execute(delete(CollectionMember).where(CollectionMember.id == member_id))


def search_scope(
    session: Session, who: Account | None, collection: str | None = None
) -> list[int] | None:
    """The collection ids a search by `who` may see (None: all), narrowed to one collection
    when it is named. A collection the person may not read is answered as missing (404)."""
    readable = readable_collections(session, who)
    if not collection:
        return readable
    return [get_collection(session, collection, readable=readable).id]
