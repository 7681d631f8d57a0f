"""Resilient client: what a production page needs to stay connected, and to show it.

See ``ticks.py`` for the publisher, ``__main__.py`` for the command and ``page.js`` for the
page with its connection-quality panel.
"""
