"""``assistants-backfill rollback``: delete exactly the patterns this pipeline created in a scope, and put
back those its learns replaced (see :mod:`pipelines.load.rollback`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from assets.cli.destination import add_server_options, destination_from_args, rest_option_problems
from assets.cli.formatting import DefaultsHelpFormatter
from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.load.rest.pacing import SERVER_PER_KEY_LIMIT, rollback_pace
from pipelines.load.rollback import rollback_embedded, rollback_rest
from pipelines.tables import DEFAULT_DATA_DIR, DataLayout


def rollback(args: argparse.Namespace) -> int:
    if str(args.data_dir).startswith("s3:"):
        # A rollback on a working copy would change the copy and publish nothing.
        print("error: --data-dir: rollback works on local data directories only", file=sys.stderr)
        return 2
    layout = DataLayout.at(args.data_dir)
    known = read_scopes(layout)["scope"].to_list() if layout.staged.exists() else []
    if args.scope not in known:
        print(
            f"error: scope {args.scope!r} not found in {layout.root} (known: {', '.join(known) or 'none'})",
            file=sys.stderr,
        )
        return 2
    tenant_id, project_id = scope_names(layout, args.scope)
    rest = bool(args.engramia_url or args.api_key_env or args.servers)
    if rest and args.embedded:
        print(
            "error: --embedded cannot be combined with --engramia-url/--api-key-env/--servers",
            file=sys.stderr,
        )
        return 2
    if rest:
        if args.requests_per_minute is None:
            args.requests_per_minute = rollback_pace(args.server_key_limit)
        if problems := rest_option_problems(args):
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        try:
            args.destination = "rest-import"  # the mode does not matter for deleting by key
            destination = destination_from_args(args)
            server = destination.server_for(layout, args.scope, tenant_id, project_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        report = rollback_rest(
            layout,
            args.scope,
            server,
            destination.rest_options(),
            dry_run=args.dry_run,
            say=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    else:
        report = rollback_embedded(
            layout, args.scope, tenant_id, project_id, args.store, dry_run=args.dry_run
        )
    out = report.as_dict()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        verb = "would delete" if args.dry_run else "rollback of"
        print(f"{verb} scope {args.scope} ({tenant_id}/{project_id}) at {report.destination}:")
        for item in report.items:
            note = f"  ({item.note})" if item.note else ""
            key = item.key or "(key unknown)"
            print(f"  {item.action:<14} {item.pattern_id}  {key}  [{item.outcome}]{note}")
        print(
            f"deleted {out['deleted']}, already absent {out['absent']}, restored {out['restored']}, "
            f"would delete {out['would_delete']}, would restore {out['would_restore']}, key unknown "
            f"{out['key_unknown']}, left in place {out['left_in_place']}; pattern_count "
            f"{report.pattern_count_before} -> {report.pattern_count_after}"
        )
    if report.error:
        print(f"error: {report.error}", file=sys.stderr)
        return 1
    return 0


def add_rollback_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "rollback",
        help="delete exactly the patterns this pipeline loaded into a scope",
        description="Delete exactly the patterns this pipeline loaded into one scope, and nothing else.",
        formatter_class=DefaultsHelpFormatter,
    )
    b.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the data folder the scope was loaded from"
    )
    b.add_argument("--scope", required=True, help="the scope key (as in staged/*/scope=<key>)")
    b.add_argument(
        "--embedded", action="store_true", help="the embedded store (used anyway without REST server options)"
    )
    b.add_argument("--store", type=Path, help="embedded Engramia store folder (none: <data-dir>/engramia)")
    b.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    # Rollback only deletes by key: reaching the server is all it needs. Learned patterns whose key the
    # ledger lacks are looked up by their text both as sent redacted and as staged, so there is no
    # redaction option, and deletes go one at a time.
    g = add_server_options(b, "REST server (the scope's Engramia server; without these, the embedded store)")
    g.add_argument(
        "--server-key-limit",
        type=float,
        default=SERVER_PER_KEY_LIMIT,
        help="the server's requests/min per API key (ENGRAMIA_RATE_LIMIT_PER_KEY); rollback deletes at this "
        "pace unless --requests-per-minute is given",
    )
    # each delete is a path of its own: the per-key limit, not the per-path one, sets the pace
    b.set_defaults(func=rollback, requests_per_minute=None)
