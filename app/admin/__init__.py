"""The admin panel at /admin and the admin JSON API at /api/admin, one module per area: the
page itself and the audit log (`page`), jobs (`jobs`), collections and access with
reindexing (`collections`), index generations (`generations`), people (`people`), and
quality over time with the trace of any answer (`quality`). Every route is for admins only
(403 otherwise), enforced on the server; routes are thin and call the domains' services."""

from fastapi import APIRouter

from app.admin import collections, generations, jobs, page, people, quality

ROUTERS: list[APIRouter] = [
    page.pages,
    jobs.pages,
    jobs.api,
    collections.pages,
    collections.api,
    generations.pages,
    people.pages,
    quality.pages,
    quality.api,
]
