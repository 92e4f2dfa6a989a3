"""Is there a headless OpenGL for MuJoCo's offscreen renderer here? Asked cheaply (ctypes, no
MuJoCo import, tens of milliseconds), so the Snakefile can ask before it plans video jobs.

MuJoCo's EGL path asks EGL for its devices and opens the first; OSMesa needs only its
library. The answer names what the renderer will use, or why nothing can render.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_EGL_PLATFORM_DEVICE_EXT = 0x313F
FIX = "install EGL (Debian: apt install libegl1) or OSMesa (libosmesa6 and MUJOCO_GL=osmesa)"


_USER_GL = "PHYSREC_RENDER_GL"  # the user's MUJOCO_GL, kept for the processes that render


def disable_gl_keeping_choice() -> None:
    """Before MuJoCo's first import in a process that does not render (the Snakefile, every job
    but the videos): MuJoCo loads the OpenGL named by MUJOCO_GL when imported, which costs tens
    of milliseconds and fails where that library is absent. The user's choice is kept for
    rendering, also in the jobs this process starts."""
    chosen = os.environ.get("MUJOCO_GL", "")
    if chosen not in ("", "disable"):
        os.environ.setdefault(_USER_GL, chosen)
    os.environ["MUJOCO_GL"] = "disable"


def render_backend() -> str:
    """The MUJOCO_GL that rendering uses: the user's choice, else EGL."""
    chosen = os.environ.get(_USER_GL) or os.environ.get("MUJOCO_GL", "")
    return chosen if chosen not in ("", "disable") else "egl"


def _egl_problem() -> str | None:
    try:
        lib = ctypes.CDLL("libEGL.so.1")
    except OSError:
        return "libEGL.so.1 not found"
    lookup = lib.eglGetProcAddress
    lookup.restype, lookup.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    query_addr, display_addr = lookup(b"eglQueryDevicesEXT"), lookup(b"eglGetPlatformDisplayEXT")
    if not query_addr or not display_addr:
        return "EGL has no device extension (EGL_EXT_device_enumeration)"
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                             ctypes.POINTER(ctypes.c_int))(query_addr)
    devices, count = (ctypes.c_void_p * 16)(), ctypes.c_int(0)
    if not query(16, devices, ctypes.byref(count)) or count.value < 1:
        return "EGL lists no device"
    display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(display_addr)
    dpy = display(_EGL_PLATFORM_DEVICE_EXT, devices[0], None)
    lib.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.eglTerminate.argtypes = [ctypes.c_void_p]
    if not dpy or not lib.eglInitialize(dpy, None, None):
        return "EGL could not open its first device"
    lib.eglTerminate(dpy)
    return None


def choose_renderer(say) -> str:
    """Before MuJoCo's first import in a process that renders: "opengl" with MUJOCO_GL set to
    the OpenGL that works here, else "software" (render/software.py), said once with the fix."""
    problem = headless_gl_problem()
    if problem is None:
        os.environ["MUJOCO_GL"] = render_backend()
        return "opengl"
    say(f"{problem}. Drawing with physrec's software renderer instead (flat shading, no shadows).")
    return "software"


def headless_gl_problem() -> str | None:
    """None when offscreen rendering can work here, else a sentence saying why not and what to do."""
    backend = render_backend()
    if backend == "egl":
        problem = _egl_problem()
    elif backend == "osmesa":
        problem = None if ctypes.util.find_library("OSMesa") else "libOSMesa not found"
    else:
        return None  # glfw and others: the user's own display; let the renderer answer
    return None if problem is None else f"no headless OpenGL (MUJOCO_GL={backend}: {problem}); {FIX}"
