"""``saffron serve``: an OpenAI-compatible HTTP server in front of the search methods.

Layers: :mod:`~saffron.serve.schemas` (request bodies), :mod:`~saffron.serve.prompts`
(messages → token sequence), :mod:`~saffron.serve.protocol` (request → plan, outcome →
response), :mod:`~saffron.serve.engine` (bounded queue, one worker thread that owns the
models), :mod:`~saffron.serve.metrics` (Prometheus), :mod:`~saffron.serve.app` (routes),
the subcommand is :mod:`saffron.cli.serve`.
"""
