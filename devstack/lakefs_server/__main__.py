"""python -m devstack.lakefs_server --host 127.0.0.1 --port 8000 --data-dir DIR --access-key-id K ..."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from devstack.lakefs_server.app import create_app
from devstack.lakefs_server.auth import Credentials

VALUE_OPTIONS = ("--host", "--port", "--data-dir", "--access-key-id", "--secret-access-key")


def _attach_values(argv: list[str]) -> list[str]:
    """`--opt value` as `--opt=value`: argparse mistakes a value starting with "-" (a secret) for an option."""
    attached: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        attached.append(f"{argument}={next(arguments, '')}" if argument in VALUE_OPTIONS else argument)
    return attached


def main() -> None:
    parser = argparse.ArgumentParser(description="A lakeFS-compatible server persisted in a data directory.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", type=Path, required=True, help="where objects and metadata are kept")
    parser.add_argument("--access-key-id", required=True, help="the admin user's access key id")
    parser.add_argument("--secret-access-key", required=True, help="the admin user's secret access key")
    args = parser.parse_args(_attach_values(sys.argv[1:]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.data_dir, Credentials(args.access_key_id, args.secret_access_key))
    # One process: the write lock and the SQLite connections live in it.
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="info")


if __name__ == "__main__":
    main()
