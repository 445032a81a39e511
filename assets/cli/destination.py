"""Destination options shared by ``run`` and ``rollback``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from assets.destination import EngramiaDestination
from pipelines.load.rest.options import MODES as REST_MODES
from pipelines.load.rest.servers import ServerMap
from pipelines.objectstore.location import absolute

# RestOptions refuses a body limit under this; checked here too so that the refusal names the option.
MIN_BODY_BYTES = 4_096


def destination_from_args(args: argparse.Namespace) -> EngramiaDestination:
    """The destination resource from the ``run`` options (REST options are ignored for embedded and
    none)."""
    rest = args.destination in REST_MODES
    if rest and not args.servers and not (args.engramia_url and args.api_key_env):
        raise ValueError(
            f"--destination {args.destination} needs --engramia-url URL --api-key-env NAME (one server "
            "and key for every scope of the run) or --servers FILE (a key per scope)"
        )
    if args.servers and (args.engramia_url or args.api_key_env):
        raise ValueError("give either --servers FILE or --engramia-url/--api-key-env, not both")
    destination = EngramiaDestination(
        mode=args.destination,
        store_dir=absolute(args.store) if args.store else None,
        **(_rest_fields(args) if rest else {}),
    )
    if rest:
        # A bad URL, variable name or mapping file fails here, before any work; so does a key variable
        # that is not set, which would otherwise fail every scope only after ingest, pairing and scoring.
        _check_keys_set(args, destination.servers())
        if not rest_option_problems(args):
            # Values rest_option_problems knows are refused by run_problems, naming the option (one line
            # per problem, not a second one here); anything else RestOptions refuses is caught here.
            try:
                destination.rest_options()
            except ValueError as exc:
                raise ValueError(f"--destination {args.destination}: {exc}") from None
    return destination


def _check_keys_set(args: argparse.Namespace, servers: ServerMap) -> None:
    """ValueError naming the variables that hold no key, never their values. Every server of a mapping
    file is checked: the scopes of a run are known only once its dumps are ingested."""
    configured = (
        [servers.single] if servers.single else [*servers.by_scope.values(), *servers.by_pair.values()]
    )
    # Blank counts as unset, as when the client builds its Authorization header.
    unset = sorted({s.api_key_env for s in configured if not os.environ.get(s.api_key_env, "").strip()})
    if not unset:
        return
    if servers.single is not None:
        raise ValueError(
            f"--api-key-env {unset[0]}: the environment variable is not set (it must hold the Engramia "
            "API key)"
        )
    raise ValueError(
        f"--servers {args.servers}: environment variable(s) not set: {', '.join(unset)} (each must hold the "
        "Engramia API key of the scopes that name it)"
    )


def rest_option_problems(args: argparse.Namespace) -> list[str]:
    """One line per REST option RestOptions (or a sane load) would refuse, naming the option. Options a
    command does not take (rollback has no load options) keep the destination's valid defaults."""
    problems = []
    for option, name, low in (
        ("--timeout", "timeout", 0.001),
        ("--requests-per-minute", "requests_per_minute", 0),
        ("--concurrency", "concurrency", 1),
        ("--max-retries", "max_retries", 0),
        ("--max-retry-after", "max_retry_after", 0),
        ("--max-body-bytes", "max_body_bytes", MIN_BODY_BYTES),
    ):
        value = getattr(args, name, None)
        if value is not None and value < low:
            problems.append(f"{option} {value}: must be at least {low}")
    quota = getattr(args, "quota_pct", None)
    if quota is not None and not 0 < quota <= 1:
        problems.append(
            f"--quota-pct {quota}: give the server's ENGRAMIA_PROJECT_QUOTA_PCT, a share above 0 and at most "
            "1 (Engramia's default is 0.8)"
        )
    return problems


def _rest_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "url": args.engramia_url,
        "api_key_env": args.api_key_env,
        "servers_file": absolute(args.servers) if args.servers else None,
        "timeout": args.timeout,
        "requests_per_minute": args.requests_per_minute,
        "max_retries": args.max_retries,
        "max_retry_after": args.max_retry_after,
    }
    # Options only some commands take (rollback sends nothing, so it has no load options): the rest keep
    # the destination's defaults.
    for name in ("concurrency", "async_import", "max_body_bytes", "resend_rejected", "quota_pct"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    if hasattr(args, "no_redact"):
        fields["redact"] = not args.no_redact
    if hasattr(args, "no_validate"):
        fields["validate_limits"] = not args.no_validate
    return fields


def add_server_options(p: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """How to reach an Engramia server: where, with which key, and how patiently. Shared by every command
    that talks to one; returns the group so a command can add its own options to it."""
    g = p.add_argument_group(title)
    g.add_argument("--engramia-url", help="base URL of the Engramia server (for every scope; see --servers)")
    g.add_argument("--api-key-env", help="NAME of the environment variable holding the API key (not the key)")
    g.add_argument("--servers", type=Path, help="YAML/JSON file mapping scopes to url + api_key_env")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    g.add_argument(
        "--requests-per-minute",
        type=float,
        default=60.0,
        help="client-side rate limit (the server's per-path limit is 60; 0 = none)",
    )
    g.add_argument("--max-retries", type=int, default=5, help="retries on connection errors, timeouts, 5xx")
    g.add_argument(
        "--max-retry-after",
        type=float,
        default=120.0,
        help="longest wait honoured for one 429 Retry-After (seconds)",
    )
    return g


def add_rest_options(p: argparse.ArgumentParser) -> None:
    """The server options of a load (``run``): reaching the server, plus how patterns are sent."""
    g = add_server_options(p, "REST destination (rest-learn, rest-import)")
    g.add_argument("--no-redact", action="store_true", help="send task and code without PII redaction")
    g.add_argument(
        "--quota-pct",
        type=float,
        default=None,
        help="the server's ENGRAMIA_PROJECT_QUOTA_PCT, when not Engramia's default 0.8: the share of the "
        "plan's pattern limit a project may hold, checked before anything is sent",
    )
    g.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests in flight (JSON-backed servers need 1)",
    )
