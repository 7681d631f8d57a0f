"""Token stream: an LLM-style answer streamed token by token on ``answers/<answer id>``.

See ``generator.py`` for the events, ``consumer.py`` for the Python consumer, ``__main__.py``
for the command and ``page.js`` for the page.
"""
