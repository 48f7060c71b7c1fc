"""A lakeFS-compatible HTTP server for the no-Docker local stack and the tests.

It keeps the lakeFS v1 API semantics that the `lakefs` and `lakefs_sdk` clients rely on (repositories,
branches with a staging area, commits, three-way merges, tags, ref expressions, branch protection and
pre-commit/pre-merge webhooks), persisted under one data directory: object contents as content-addressed
files, everything else in SQLite. Start it with `python -m devstack.lakefs_server --help`.
"""
