"""A migration in Python (as Alembic or Django's migrate would connect):
straight to the primary on the binding's direct DATABASE_URL, its sslmode as
libpq reads it. Prints one ``REPORT {json}`` line."""

from __future__ import annotations

import argparse
import json
import os

import psycopg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pod", default="migrate")
    opts = parser.parse_args()
    report = {"pod": opts.pod, "queries": 0, "errors": 0, "firstErrors": []}
    try:
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            conn.execute("CREATE INDEX IF NOT EXISTS orders_pod ON orders (pod)")
            report["queries"] = 1
    except psycopg.Error as err:
        report["errors"] = 1
        report["firstErrors"] = [str(err)]
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
