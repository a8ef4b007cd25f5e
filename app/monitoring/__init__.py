"""Seeing the service run: Prometheus metrics of every process (`metrics`, `files`), served
at GET /metrics (`exposition`), and the admin Quality page's history (`quality`, drawn as
SVG by `charts`)."""
