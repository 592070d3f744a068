"""The challenge server's routes, one router per concern (public API, a team's submissions, pages, logins, the
jury), and the dependencies they share (deps.py) over the server's state (state.py)."""
