"""The web console: logistics, QA and auditors at work in a browser, in Chinese and English.

Server-rendered pages (Jinja2) mounted by the API app at ``/`` (the API stays under
``/api/v1``), with as little JavaScript as the live parts need and every asset served from
the package. The console shares the API's login, token, roles and queries; a page checks on
the server what the API would (a hidden button is not a permission), and every signature
re-authenticates through the same ERP call the API makes.
"""

from coldtrail.console.views import ConsoleDeps, register

__all__ = ["ConsoleDeps", "register"]
