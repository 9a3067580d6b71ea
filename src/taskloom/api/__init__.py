"""HTTP API and dashboard (`pip install 'taskloom[api]'`).

`create_app(manager, token=None)` builds the FastAPI app; `serve(manager, host, port)` runs it.
"""

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
