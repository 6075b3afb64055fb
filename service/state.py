"""Typed application state keys (aiohttp AppKey), shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from service.auth import Auth
from service.config import Config
from service.hub import Hub
from service.producer import Producer
from service.sse import PRINCIPAL, WatcherSet

SETTINGS = web.AppKey("settings", Config)
PRODUCER = web.AppKey("producer", Producer)
HUB = web.AppKey("hub", Hub)
WATCHERS = web.AppKey("watchers", WatcherSet)
AUTH = web.AppKey("auth", Auth)

__all__ = ["AUTH", "HUB", "PRINCIPAL", "PRODUCER", "SETTINGS", "WATCHERS"]
