"""The live console: the page and its routes, sign-in, the WebSocket gateway, step-in."""
