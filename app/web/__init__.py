"""The web page for annotators and operators: static assets served by the API itself (``app.web.routes``)."""
