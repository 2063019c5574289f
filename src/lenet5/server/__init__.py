"""The web demo behind ``lenet5 serve``: an HTTP API and a draw-a-digit page (needs the ``web``
extra: ``pip install -e '.[web]'``). ``create_app`` builds the FastAPI app around one loaded model;
``listen`` opens the socket it is served on, and ``serve`` answers on it with one or more worker
processes."""

from .app import create_app, default_workers, listen, serve, usable_cores

__all__ = ["create_app", "default_workers", "listen", "serve", "usable_cores"]
