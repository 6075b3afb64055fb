"""The HTTP API and the dashboard's server side (aiohttp)."""
