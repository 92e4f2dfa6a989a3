"""Rendering recorded attempts (MuJoCo's offscreen renderer, headless through EGL or OSMesa)."""

# report.videos: the folders of a batch's videos that each value fills (kept/, failed/). `kept`
# has a failed/ too: a batch that keeps no motion shows its failures there (batch_videos.py).
VIDEO_KINDS = {"kept": ("kept", "failed"), "failed": ("failed",), "all": ("kept", "failed"), "none": ()}


def video_quotas(batches: list[str], max_videos: int | None) -> dict[str, int | None]:
    """Videos of each kind per batch for report.max_videos per iteration, spread over the batches
    in plan order (one each for the first ones when there are more batches than videos); batches
    with none get no videos job. None: every motion of every batch."""
    if max_videos is None:
        return {b: None for b in batches}
    share, extra = divmod(max_videos, max(len(batches), 1))
    quotas = {b: share + (i < extra) for i, b in enumerate(batches)}
    return {b: q for b, q in quotas.items() if q}
