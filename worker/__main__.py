"""``python -m worker``: the same as ``distillery worker`` (settings from ``DISTILLERY_*``, signals, loop).

``--once`` processes at most one job and exits. SIGTERM/SIGINT stop gracefully: the running job
checkpoints, is handed back to the queue, and the process exits 0.
"""

from __future__ import annotations

import sys
import warnings

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def main(argv: list[str] | None = None) -> int:
    from app.config import get_settings
    from app.embedded import resolve_database_url
    from app.observability import configure_logging
    from worker.loop import run_worker

    args = sys.argv[1:] if argv is None else argv
    if any(a not in ("--once",) for a in args):
        print("usage: python -m worker [--once]", file=sys.stderr)
        return 2
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    url = resolve_database_url(settings.database_url, settings.pgdata_dir)
    return run_worker(url, settings, once="--once" in args)


if __name__ == "__main__":
    sys.exit(main())
