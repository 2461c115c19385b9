"""`minicream serve`: an OpenAI-compatible image API, a native API and a web page over one Pipeline."""
from .app import create_app
from .settings import ServeSettings

__all__ = ["create_app", "ServeSettings"]
