"""The browser pages: the playground at `/` and the operator console at `/console`.

Plain HTML, CSS and JavaScript modules served from this package (`static/`), with no build
step and nothing loaded from anywhere else; the pages call the JSON API like any client.
"""
