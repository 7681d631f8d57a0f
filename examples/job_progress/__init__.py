"""Job progress: a fake search pipeline reports its stages on ``jobs/<job id>``.

See ``pipeline.py`` for the events, ``__main__.py`` for the command and ``page.js`` for the
page that follows a job.
"""
