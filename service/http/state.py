"""Typed application state (aiohttp AppKey): one of each per app, nothing process-global."""

from __future__ import annotations

from aiohttp import web

from service.core.config import Config
from service.core.hub import Hub
from service.core.tracing import Tracing
from service.http.auth import Auth
from service.producer import Producer
from service.queries import Queries
from service.sse.stats import StatsFeed
from service.sse.watchers import WatcherSet
from service.stats import TrendReader

SETTINGS = web.AppKey("settings", Config)
PRODUCER = web.AppKey("producer", Producer)
QUERIES = web.AppKey("queries", Queries)
HUB = web.AppKey("hub", Hub)
WATCHERS = web.AppKey("watchers", WatcherSet)
AUTH = web.AppKey("auth", Auth)
STATS = web.AppKey("stats", StatsFeed)
TREND = web.AppKey("trend", TrendReader)
TRACING = web.AppKey("tracing", Tracing)
# who is asking: an API key's fingerprint, "watch:<job>", or the client address without keys
PRINCIPAL = web.RequestKey("principal", str)
