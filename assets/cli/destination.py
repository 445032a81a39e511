"""Destination options shared by ``run`` and ``rollback``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from assets.destination import EngramiaDestination
from pipelines.load.rest.options import MODES as REST_MODES


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
        store_dir=str(args.store) if args.store else None,
        **(_rest_fields(args) if rest else {}),
    )
    if rest:
        destination.servers()  # a bad URL, variable name or mapping file fails here, before any work
    return destination


def _rest_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "url": args.engramia_url,
        "api_key_env": args.api_key_env,
        "servers_file": str(args.servers) if args.servers else None,
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
