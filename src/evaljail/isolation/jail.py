"""The orchestrator: how a jailed zygote is started for a profile.

Binds, read-only, only the Python runtime (its prefix and the active environment's
site-packages), the system libraries, and the worker package at :data:`JAIL_WORKER_DIR`. No home,
no /etc, no project checkout, nothing writable: the root and /dev are remounted read-only and
there is no /tmp (the scientific profile has a small one, sealed by the zygote after
preloading). The environment is cleared and rebuilt from :func:`worker_env`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .bubblewrap import BwrapSpec, build_args, host_wide_proc_files, runtime_paths

__all__ = [
    "BOOT", "JAIL_WORKER_DIR", "LOAD_WORKER", "host_worker_dir", "worker_argv", "worker_env"
]  # fmt: skip

#: Where the worker package appears inside the jail.
JAIL_WORKER_DIR = "/opt/evaljail/worker"

#: Loads the worker package under the name ``evaljail_worker`` from argv[1] (by path: the host
#: may run evaljail from anywhere, and the jail sees only the worker package).
LOAD_WORKER = (
    "import sys, importlib.util as u\n"
    "p = sys.argv[1]\n"
    "s = u.spec_from_file_location('evaljail_worker', p + '/__init__.py',"
    " submodule_search_locations=[p])\n"
    "m = u.module_from_spec(s); sys.modules['evaljail_worker'] = m; s.loader.exec_module(m)\n"
)
#: Loads the worker package and runs the zygote.
BOOT = LOAD_WORKER + "from evaljail_worker.zygote import main\nmain()\n"


def host_worker_dir() -> Path:
    """The worker package on the host."""
    from .. import worker

    return Path(worker.__file__).resolve().parent


def worker_env(*, scientific: bool) -> dict[str, str]:
    """The whole environment of a zygote: nothing from the service's environment."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
    }
    if scientific:
        env.update(
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            NUMEXPR_NUM_THREADS="1",
            VECLIB_MAXIMUM_THREADS="1",
            MPLBACKEND="Agg",
            MPLCONFIGDIR="/tmp/matplotlib",
        )
    return env


def worker_argv(*, jailed: bool, scientific: bool, bwrap: str = "bwrap") -> list[str]:
    """The argv that starts one zygote; under bubblewrap unless ``jailed`` is False."""
    python = sys.executable
    if not jailed:
        return [python, "-I", "-c", BOOT, str(host_worker_dir())]
    spec = BwrapSpec(
        ro_binds=runtime_paths(),
        ro_binds_to=((str(host_worker_dir()), JAIL_WORKER_DIR),),
        # matplotlib will not import without a writable cache directory: the scientific jail
        # gets a 4 MB /tmp that the zygote seals (read-only modes) once it has preloaded.
        tmpfs=("/tmp",) if scientific else (),
        tmpfs_size_bytes=4 * 1024 * 1024,
        env=tuple(sorted(worker_env(scientific=scientific).items())),
        proc_masks=host_wide_proc_files(),
        extra_args=("--remount-ro", "/", "--remount-ro", "/dev"),
    )
    return build_args(spec, [python, "-I", "-c", BOOT, JAIL_WORKER_DIR], bwrap=bwrap)
