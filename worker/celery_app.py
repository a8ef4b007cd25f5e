"""The Celery application. Configured from the settings when first imported in a worker, and
again by `configure()` in processes that start embedded parts before sending tasks."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from app.config import Settings, get_settings

celery_app = Celery("groundwork", include=["worker.tasks"])


def configure(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not resolved: start the embedded parts first")
    celery_app.conf.update(
        broker_url=settings.redis_url,
        result_backend=settings.redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A task is acknowledged when it finishes: a worker that dies mid-task leaves it to be
        # delivered again (tasks are idempotent), and a lost pool process rejects it back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The hard limit is shorter than the visibility timeout, so Redis never hands a task
        # that is still running to a second worker.
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(settings.task_time_limit_s - 30, settings.task_time_limit_s // 2),
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # Look for tasks abandoned by a dead worker every tenth of the timeout.
            "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s
        },
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
    )
    return celery_app


@worker_process_init.connect
def _init_worker_process(**_: object) -> None:
    # Each pool process opens its own database connections after the fork.
    from app.db import dispose_engines
    from app.runtime import share_cores

    dispose_engines()
    share_cores(get_settings().worker_concurrency)


if get_settings().redis_url:
    configure(get_settings())
# else: a process that starts embedded parts calls configure() once their URLs are known.
