"""Reusable widgets: controls bound to JobSpec fields, streaming charts, banners."""
