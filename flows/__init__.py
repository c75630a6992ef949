"""Prefect flows that chain the stages (the ``vta`` CLI that runs them is the ``cli`` package).

Defaults for running offline on Prefect's ephemeral API are set here, before Prefect is imported:
no analytics, our ``vta.*`` loggers shown in flow-run logs (at INFO unless a level is set), and a generous start-up timeout for
the temporary server on small machines. Users' own settings win (setdefault).
"""

import logging
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "vta")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # stage logs outside a flow run
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights load from local paths; never a hub download
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see vta_core/__init__.py

NIGHTLY_CRON = "0 2 * * *"  # the nightly evaluation: 02:00 every day (UTC unless --timezone); Prefect-free for `vta --help`

if logging.getLogger("vta").level == logging.NOTSET:  # a served flow run would drop stage INFO lines (root: WARNING)
    logging.getLogger("vta").setLevel(logging.INFO)
