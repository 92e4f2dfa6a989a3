"""Rendering recorded attempts (MuJoCo's offscreen renderer, headless through EGL or OSMesa)."""

# report.videos: the folders of a batch's videos that each value fills (kept/, failed/).
VIDEO_KINDS = {"kept": ("kept",), "failed": ("failed",), "all": ("kept", "failed"), "none": ()}
