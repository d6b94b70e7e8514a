"""``veilstream console``: the web console for analysts, privacy officers, investigators,
auditors and SREs (FastAPI, server-rendered Jinja2 pages, a little plain JavaScript).

- :mod:`.access`   decisions from the policies' role documents (the ones storage enforces)
- :mod:`.auth`     local users (argon2) and OpenID Connect (authlib)
- :mod:`.catalog`  cameras, a camera-day's segments and manifests, status
- :mod:`.audit`    access events in the audit bucket (and ``veil.audit``)
- :mod:`.jobs`     background exports with progress
- :mod:`.ranges`   the one HTTP Range parser of every footage route (RFC 9110)
- :mod:`.sessions` server-side sessions (sign-out and removed users end them)
- :mod:`.throttle` sign-in throttling (429 without hashing while locked)
- :mod:`.links`    released exports and shared segments by link id, revocable
- :mod:`.app`      the FastAPI app: middleware, error pages, the routers; :mod:`.server` builds it
                   from the config
- :mod:`.context`  what the routes share (services, guards, audit helpers), as a FastAPI dependency
- :mod:`.routes`   one router per concern: auth, cameras, footage, subjects, cases, jobs, links, audit
"""
