"""Accounts: passwords (argon2), sessions, API keys, sign-in rate limits, groups, and the
audit log. Who may read which collection is `app.collections.access`. Functions flush; the
caller commits."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import add_named
from app.errors import Invalid, NotFound, TooManyRequests, Unauthorized
from app.models import ApiKey, AuditEvent, Group, GroupMember, User, UserSession

SESSION_DAYS = 14
API_KEY_PREFIX = "gw_"
MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_hasher = PasswordHasher()
# A hash to verify against when the account does not exist, so that timing does not tell.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise Invalid("that is not an email address")
    return email


def create_user(session: Session, email: str, password: str, role: str = "member") -> User:
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password needs at least {MIN_PASSWORD} characters")
    if role not in ("admin", "member"):
        raise Invalid("role is admin or member")
    if session.scalar(select(exists().where(User.email == email))):
        raise Invalid(f"{email} already has an account")
    user = User(email=email, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def has_admin(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(User.role == "admin", ~User.disabled))))


# -- signing in ------------------------------------------------------------------------------


class SignInLimiter:
    """Failed sign-ins slow down further tries, per account and per address, in Redis so that
    every web process agrees: past the free failures (3 for an account, 20 for an address,
    which many people may share) each next try must wait twice as long as the last (1 s, 2 s,
    4 s … up to 5 minutes). A success clears the account's count."""

    FREE = 3
    FREE_PER_ADDRESS = 20
    MAX_DELAY = 300
    WINDOW = 3600

    def __init__(self, client: redis.Redis):
        self.redis = client

    def _keys(self, email: str, address: str) -> list[str]:
        return [f"gw:signin:account:{_sha256(email)}", f"gw:signin:address:{address}"]

    def check(self, email: str, address: str) -> None:
        now = time.time()
        waits = []
        for key, free in zip(
            self._keys(email, address), (self.FREE, self.FREE_PER_ADDRESS), strict=True
        ):
            failures, last = self.redis.hmget(key, "failures", "last")
            if failures is None or last is None:
                continue
            delay = self.delay(int(failures), free)
            if now < float(last) + delay:
                waits.append(float(last) + delay - now)
        if waits:
            raise TooManyRequests(f"too many failed sign-ins: try again in {int(max(waits)) + 1} s")

    def delay(self, failures: int, free: int = FREE) -> float:
        if failures < free:
            return 0.0
        return float(min(self.MAX_DELAY, 2 ** (failures - free)))

    def failed(self, email: str, address: str) -> None:
        pipe = self.redis.pipeline()
        for key in self._keys(email, address):
            pipe.hincrby(key, "failures", 1)
            pipe.hset(key, "last", time.time())
            pipe.expire(key, self.WINDOW)
        pipe.execute()

    def succeeded(self, email: str) -> None:
        self.redis.delete(self._keys(email, "")[0])


def authenticate(
    session: Session, limiter: SignInLimiter, email: str, password: str, address: str
) -> User:
    """The user, or one generic error (which part was wrong is not said)."""
    try:
        email = normalize_email(email)
    except Invalid:
        raise Unauthorized("wrong email or password") from None
    limiter.check(email, address)
    user = session.scalar(select(User).where(User.email == email))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        limiter.failed(email, address)
        raise Unauthorized("wrong email or password")
    assert user is not None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    limiter.succeeded(email)
    return user


@dataclass(frozen=True)
class Account:
    """Who is acting, as plain values (usable after the request's session has closed)."""

    id: int
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(user.id, user.email, user.role)


@dataclass(frozen=True)
class SignedIn:
    user: Account
    csrf_token: str | None  # the session's; None when signed in with an API key
    api_key_id: int | None = None


def start_session(session: Session, user: User) -> tuple[str, UserSession]:
    token = secrets.token_urlsafe(32)
    row = UserSession(
        token_hash=_sha256(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=datetime.now(UTC) + timedelta(days=SESSION_DAYS),
    )
    session.add(row)
    session.flush()
    return token, row


def session_user(session: Session, token: str | None) -> SignedIn | None:
    if not token:
        return None
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _sha256(token)))
    if row is None or row.expires_at <= datetime.now(UTC):
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return SignedIn(Account.of(user), row.csrf_token)


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(UserSession).where(UserSession.token_hash == _sha256(token)))


# -- API keys --------------------------------------------------------------------------------


def create_api_key(session: Session, user: Account | User, name: str) -> tuple[str, ApiKey]:
    """The key (shown once) and its row."""
    name = (name or "").strip()[:100] or "key"
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(user_id=user.id, name=name, prefix=key[:10], key_hash=_sha256(key))
    session.add(row)
    session.flush()
    return key, row


def api_keys_of(session: Session, user: Account) -> list[ApiKey]:
    """A person's API keys, newest first (revoked ones too)."""
    return list(
        session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id.desc()))
    )


def revoke_api_key(session: Session, user: Account, key_id: int) -> None:
    row = session.get(ApiKey, key_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"no API key {key_id}")
    row.revoked_at = row.revoked_at or datetime.now(UTC)


def api_key_user(session: Session, key: str | None) -> SignedIn | None:
    if not key or not key.startswith(API_KEY_PREFIX):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _sha256(key)))
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    row.last_used_at = datetime.now(UTC)
    return SignedIn(Account.of(user), None, row.id)


def user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user {email}")
    return user


def _group_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise Invalid("a group name is 1 to 200 characters")
    return name


def group_named(session: Session, name: str) -> Group:
    name = _group_name(name)
    group = session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"no group {name}")
    return group


def create_group(session: Session, name: str) -> Group:
    """A new group; a name that is taken is refused (409), not answered as made."""
    group = Group(name=_group_name(name))
    add_named(session, group, Group.name, f"a group named {group.name!r} exists already")
    return group


def add_to_group(session: Session, group: Group, user: User) -> None:
    if session.get(GroupMember, (group.id, user.id)) is None:
        session.add(GroupMember(group_id=group.id, user_id=user.id))
        session.flush()


def count_users(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


# -- audit -----------------------------------------------------------------------------------


def audit(
    session: Session,
    actor: Account | None,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    address: str | None = None,
) -> None:
    session.add(
        AuditEvent(
            actor_id=actor.id if actor else None,
            actor_email=actor.email if actor else None,
            action=action,
            target=target,
            detail=detail or {},
            address=address,
        )
    )


_limiters: dict[str, SignInLimiter] = {}


def limiter_for(settings: Settings) -> SignInLimiter:
    url = settings.redis_url or ""
    if url not in _limiters:
        _limiters[url] = SignInLimiter(redis.Redis.from_url(url, socket_timeout=2))
    return _limiters[url]


def people(session: Session) -> dict:
    """Users, groups and each group's members' emails (for the admin panel)."""
    by_group: dict[int, list[str]] = {}
    for group_id, email in session.execute(
        select(GroupMember.group_id, User.email).join(User, User.id == GroupMember.user_id)
    ):
        by_group.setdefault(group_id, []).append(email)
    return {
        "users": session.scalars(select(User).order_by(User.email)).all(),
        "groups": session.scalars(select(Group).order_by(Group.name)).all(),
        "group_members": by_group,
    }


def toggle_disabled(session: Session, user_id: int, actor: Account) -> User:
    """Disable a user (their sessions and keys stop working), or enable them again."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if user.id == actor.id:
        raise Invalid("you cannot disable yourself")
    user.disabled = not user.disabled
    return user


def group_by_id(session: Session, group_id: int) -> Group:
    group = session.get(Group, group_id)
    if group is None:
        raise NotFound(f"no group {group_id}")
    return group
