"""``python -m zonepurge.sandbox [--host H] [--port P] [--config FILE] [--plan PLAN]``."""

from __future__ import annotations

import argparse
import sys

from zonepurge.plans import Plan
from zonepurge.sandbox.config import SandboxConfig
from zonepurge.sandbox.server import run
from zonepurge.serving import BindError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m zonepurge.sandbox",
        description="Serve a Cloudflare purge API emulator.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--config", metavar="FILE", help="JSON file of SandboxConfig fields")
    parser.add_argument("--plan", choices=[p.value for p in Plan], help="overrides the file's")
    args = parser.parse_args(argv)

    config = SandboxConfig.from_file(args.config) if args.config else SandboxConfig()
    if args.plan:
        config = config.model_copy(update={"plan": Plan(args.plan)})
    try:
        run(host=args.host, port=args.port, config=config)
    except BindError as exc:
        print(f"error: {exc.strerror} (another --port, or 0 for a free one)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
