"""The HTTP clients' own INFO lines quote every request's full URL: a webhook's token, a custom LLM's
login or key, a custom tool's query secret. Every process that sends to such URLs holds them at WARNING."""

from __future__ import annotations

import logging

CHATTY_HTTP_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "openai")


def quiet_http_loggers() -> None:
    """WARNING for the HTTP clients' loggers, unless a level was set for one on purpose (to debug it)."""
    for name in CHATTY_HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
