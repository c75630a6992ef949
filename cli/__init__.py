"""The ``vta`` command line: every click command lives in this package (nothing imports it but tests).

``main`` holds the group and most commands; ``metrics``, ``sweep``, ``serve`` and ``listen`` one command
group each. Importing ``flows`` first applies the offline / Prefect defaults before Prefect is imported.
"""

import flows  # noqa: F401 - sets offline/Prefect defaults before Prefect is imported
