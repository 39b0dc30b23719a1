"""``openformers hub ...``: the local model hub (OPENFORMERS_HUB or --hub DIR).

``serve DIR`` serves it over HTTP for huggingface_hub and transformers (HF_ENDPOINT; uploads with --token);
``list``, ``log``, ``branch`` and ``tag`` read and name its history.
"""
from __future__ import annotations

import argparse
import os


def _hub_token() -> str | None:
    from openformers.core import settings

    return settings.get("OPENFORMERS_HUB_TOKEN")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("serve", help="serve a hub directory over HTTP (the Hub's download API, read-only)")
    p.add_argument("directory", metavar="DIR", nargs="?", default=None, help="the hub directory (default: OPENFORMERS_HUB)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=_hub_token(),
                   help="accept uploads (huggingface_hub's upload_folder, create_commit) that carry this token "
                        "(default: OPENFORMERS_HUB_TOKEN; unset: read-only)")
    p = sub.add_parser("list", help="the repositories of the hub")
    p.add_argument("--author", default=None)
    p = sub.add_parser("log", help="the commits of a repository, newest first")
    p.add_argument("repo_id")
    p.add_argument("--revision", default=None)
    for action, what in (("branch", "create a branch"), ("tag", "create a tag")):
        p = sub.add_parser(action, help=f"{what} at a revision (default: main)")
        p.add_argument("repo_id")
        p.add_argument("name")
        p.add_argument("--revision", default=None)
    for p in sub.choices.values():
        p.add_argument("--hub", default=None, help="the hub directory (default: OPENFORMERS_HUB, else the HF cache)")


def run(args: argparse.Namespace) -> int:
    from openformers.hub.local import LocalHub

    hub_dir = args.hub or getattr(args, "directory", None)
    if hub_dir:
        os.environ["OPENFORMERS_HUB"] = str(hub_dir)
        from openformers.core import settings

        settings.reload()
    if args.action == "serve":
        from openformers.hub.server import serve

        serve(hub_dir, args.host, args.port, args.token)
        return 0
    hub = LocalHub(hub_dir)
    if args.action == "list":
        for m in hub.list_models(author=args.author):
            tags = f"  tags: {', '.join(m.tags)}" if m.tags else ""
            print(f"{m.id}  {m.sha}  {m.last_modified}  branches: {', '.join(m.branches)}{tags}")
    elif args.action == "log":
        for c in hub.list_repo_commits(args.repo_id, args.revision):
            print(f"{c.commit_id}  {c.created_at}  {', '.join(c.authors)}  {c.title}")
    elif args.action == "branch":
        print(hub.create_branch(args.repo_id, args.name, args.revision))
    else:
        print(hub.create_tag(args.repo_id, args.name, args.revision))
    return 0
