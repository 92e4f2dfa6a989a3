"""Rendering recorded attempts (MuJoCo's offscreen renderer, headless through EGL or OSMesa)."""
