"""The console's routes, one FastAPI ``APIRouter`` per concern; :func:`pipeline.console.app.create_app`
includes them in :data:`ROUTERS`' order. Each route takes its shared state from
``ctx: ConsoleContext = Depends(console_context)`` (:mod:`pipeline.console.context`).

- :mod:`.auth`      health, sign-in (local, OpenID Connect), sign-out, ``/api/me``
- :mod:`.cameras`   the camera list, a camera's page and day timeline
- :mod:`.footage`   segments, manifests and downloads (each read recorded first)
- :mod:`.subjects`  subject requests (the data subject's own footage)
- :mod:`.cases`     case exports, legal holds, chain verification, the cases page
- :mod:`.jobs`      export jobs: status, files, pages, release by link
- :mod:`.links`     shared segments, opening released/shared links, revocation
- :mod:`.audit`     the audit trail
"""

from __future__ import annotations

from fastapi import APIRouter

from . import audit, auth, cameras, cases, footage, jobs, links, subjects

ROUTERS: tuple[APIRouter, ...] = (auth.router, cameras.router, footage.router, subjects.router, cases.router,
                                  jobs.router, links.router, audit.router)
