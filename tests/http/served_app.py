"""The example shop wrapped by otelperf, for tests that serve it with uvicorn or gunicorn.

The config path comes from ``OTELPERF_TEST_CONFIG``. Loading happens at import (in
the master process under ``gunicorn --preload``); telemetry is built by each worker's
lifespan.
"""

from __future__ import annotations

import os

import otelperf
from examples.shop_app import app as shop_app

perf = otelperf.load(os.environ["OTELPERF_TEST_CONFIG"])
app = perf.wrap(shop_app)
