"""Event browser: alerts with acknowledgement, a retained unacked summary, ``since=3600``.

See ``alerts.py`` for the events, ``summary.py`` for the service that keeps the summary,
``__main__.py`` for the command and ``page.js`` for the page.
"""
