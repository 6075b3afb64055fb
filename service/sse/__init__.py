"""Server-Sent Events: watchers, resume rules and the two stream endpoints (aiohttp)."""
