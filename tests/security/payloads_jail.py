"""Escapes that get past a Python-level guard, for the kernel layers to stop.

Each payload reaches real ``os``/``socket``/``ctypes`` without a single dunder, through module
attributes (``json.codecs.sys.modules``), then attacks. Each prints ``ESCAPED`` only if the attack
worked. ``expected`` is the precise outcome: an Outcome value, optionally ``:ErrorType``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Real modules without dunders or blocked names (static analysis must still catch these).
PRELUDE = (
    "import json\n"
    "sys = json.codecs.sys\n"
    "real_import = sys.modules['importlib'].import_module\n"
    "os = sys.modules['os']\n"
)


@dataclass(frozen=True)
class JailPayload:
    id: str
    category: str
    code: str
    expected: str  #: "error:PermissionError", "timeout", "memory", ...
    timeout_ms: int = 2000


def _p(id: str, category: str, body: str, expected: str, timeout_ms: int = 2000) -> JailPayload:
    return JailPayload(id, category, PRELUDE + body, expected, timeout_ms)


PAYLOADS: list[JailPayload] = [
    # -- reading the host ---------------------------------------------------------------------
    _p("read-etc-passwd", "filesystem",
       "data = json.codecs.open('/etc/passwd').read()\nprint('ESCAPED' if 'root:' in data else 'no')",
       "error:FileNotFoundError"),
    _p("read-etc-shadow-fd", "filesystem",
       "fd = os.open('/etc/shadow', os.O_RDONLY)\nprint('ESCAPED', os.read(fd, 100))",
       "error:FileNotFoundError"),
    _p("list-root-home", "filesystem",
       "names = os.listdir('/root')\nprint('ESCAPED' if set(names) - {{'.pyenv'}} else 'no')",
       "any"),
    _p("list-home", "filesystem", "print('ESCAPED', os.listdir('/home'))", "error:FileNotFoundError"),
    _p("read-project-readme", "filesystem",
       "print('ESCAPED', json.codecs.open('{repo}/README.md').read()[:50])",
       "error:FileNotFoundError"),
    _p("list-project", "filesystem",
       "names = set(os.listdir('{repo}'))\nprint('ESCAPED' if names - {{'.venv'}} else 'no')",
       "any"),
    _p("read-proc1-environ", "secrets",
       "data = json.codecs.open('/proc/1/environ', 'rb').read()\n"
       "print('ESCAPED' if b'{secret}' in data else 'clean')",
       "any"),
    _p("read-own-environ", "secrets",
       "print('ESCAPED' if '{secret}' in repr(dict(os.environ)) else 'clean')", "ok"),
    _p("scan-all-proc-environ", "secrets",
       "found = False\n"
       "for pid in os.listdir('/proc'):\n"
       "    if pid.isdigit():\n"
       "        try:\n"
       "            found |= b'{secret}' in json.codecs.open(f'/proc/{{pid}}/environ', 'rb').read()\n"
       "        except OSError:\n"
       "            pass\n"
       "print('ESCAPED' if found else 'clean')", "ok"),
    # The jail's user is host root's uid when the service runs as root: file modes alone would
    # let it read the files the host keeps root-only, and root's key rings.
    _p("read-host-slabinfo", "secrets",
       "print('ESCAPED', os.read(os.open('/proc/slabinfo', os.O_RDONLY), 64))",
       "error:PermissionError"),
    _p("read-host-page-flags", "secrets",
       "print('ESCAPED', os.read(os.open('/proc/kpageflags', os.O_RDONLY), 64))",
       "error:PermissionError"),
    _p("read-root-keyrings", "secrets",
       "print('ESCAPED', os.read(os.open('/proc/keys', os.O_RDONLY), 64))",
       "error:PermissionError"),
    _p("allocate-pty", "devices",  # ptys come from one host-wide pool (kernel.pty.max)
       "print('ESCAPED', os.openpty())", "error:FileNotFoundError"),
    # -- writing ------------------------------------------------------------------------------
    _p("write-tmp", "write",
       "f = json.codecs.open('/tmp/evaljail-x', 'w')\nf.write('x')\nf.close()\nprint('ESCAPED')",
       "error:OSError"),  # no /tmp (ENOENT), or a read-only one when the runtime lives there
    _p("write-root", "write",
       "f = json.codecs.open('/escaped', 'w')\nprint('ESCAPED')", "error:OSError"),
    _p("mkdir", "write", "os.mkdir('/evaljail-dir')\nprint('ESCAPED')", "error:OSError"),
    _p("delete-worker-file", "write",
       "os.remove('/opt/evaljail/worker/__init__.py')\nprint('ESCAPED')", "error:OSError"),
    _p("write-dev-shm", "write",
       "fd = os.open('/dev/shm/x', os.O_CREAT | os.O_WRONLY)\nprint('ESCAPED')",
       "error:OSError"),
    _p("write-dev", "write",
       "fd = os.open('/dev/evaljail-x', os.O_CREAT | os.O_WRONLY)\nprint('ESCAPED')",
       "error:OSError"),
    # -- network ------------------------------------------------------------------------------
    _p("tcp-connect-loopback", "network",
       "socket = real_import('socket')\n"
       "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
       "s.connect(('127.0.0.1', {port}))\ns.sendall(b'ESCAPED')\nprint('ESCAPED')",
       "error:PermissionError"),
    _p("udp-send", "network",
       "socket = real_import('socket')\n"
       "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
       "s.sendto(b'x', ('127.0.0.1', {port}))\nprint('ESCAPED')", "error:PermissionError"),
    _p("dns-lookup", "network",
       "socket = real_import('socket')\n"
       "print('ESCAPED', socket.getaddrinfo('example.com', 80))", "error"),
    _p("unix-socket", "network",
       "socket = real_import('socket')\n"
       "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\nprint('ESCAPED')",
       "error:PermissionError"),
    # -- processes ----------------------------------------------------------------------------
    _p("os-system", "process",
       "print('ESCAPED' if os.system('true') == 0 else 'blocked')", "ok"),
    _p("subprocess-run", "process",
       "subprocess = real_import('subprocess')\n"
       "subprocess.run(['/bin/true'])\nprint('ESCAPED')", "error:PermissionError"),
    _p("os-fork", "process", "pid = os.fork()\nprint('ESCAPED', pid)", "error:PermissionError"),
    _p("fork-bomb", "process",
       "while True:\n    os.fork()\nprint('ESCAPED')", "error:PermissionError"),
    _p("execv", "process",
       "os.execv('/bin/sh', ['sh', '-c', 'true'])\nprint('ESCAPED')", "error:PermissionError"),
    _p("posix-spawn", "process",
       "os.posix_spawn('/bin/true', ['true'], {{}})\nprint('ESCAPED')", "error:PermissionError"),
    _p("kill-parent", "process",
       "os.kill(os.getppid(), 9)\nprint('ESCAPED')", "error:PermissionError"),
    _p("kill-init", "process", "os.kill(1, 9)\nprint('ESCAPED')", "error:PermissionError"),
    _p("threads", "process",
       "threading = real_import('threading')\n"
       "threading.Thread(target=lambda: None).start()\nprint('ESCAPED')", "error:RuntimeError"),
    _p("parent-memory", "process",  # the zygote is not dumpable
       "f = json.codecs.open(f'/proc/{{os.getppid()}}/mem', 'rb')\nprint('ESCAPED')",
       "error:PermissionError"),
    _p("parent-memory-write", "process",  # and /proc is read-only
       "f = json.codecs.open(f'/proc/{{os.getppid()}}/mem', 'r+b')\nprint('ESCAPED')",
       "error:OSError"),
    # -- the zygote and later executions, without kill() --------------------------------------
    _p("sigio-kill-parent", "process",
       "fcntl = real_import('fcntl')\nr, w = os.pipe()\n"
       "fcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())\nfcntl.fcntl(r, 10, 9)\n"
       "fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC | os.O_NONBLOCK)\nos.write(w, b'x')\n"
       "print('ESCAPED')", "error:PermissionError"),
    _p("sigio-owner-high-bits", "process",  # the kernel reads cmd as 32 bits: so must the filter
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "r, w = os.pipe()\n"
       "rc = libc.syscall(72, r, ctypes.c_uint64(8 | (1 << 32)), os.getppid())\n"
       "print('ESCAPED' if rc == 0 else 'blocked')", "ok"),
    _p("fiosetown-parent", "process",
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "r, w = os.pipe()\npid = ctypes.c_int(os.getppid())\n"
       "rc = libc.ioctl(r, 0x8901, ctypes.byref(pid))\n"
       "print('ESCAPED' if rc == 0 else 'blocked')", "ok"),
    _p("renice-parent", "process",
       "os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)\nprint('ESCAPED')",
       "error:PermissionError"),
    _p("idle-schedule-parent", "process",
       "os.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))\nprint('ESCAPED')",
       "error:PermissionError"),
    _p("pin-parent", "process",
       "os.sched_setaffinity(os.getppid(), {{0}})\nprint('ESCAPED')", "error:PermissionError"),
    _p("prlimit-parent", "process",
       "resource = real_import('resource')\n"
       "resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (5, 5))\nprint('ESCAPED')",
       "error:PermissionError"),
    _p("parent-oom-score", "process",
       "fd = os.open(f'/proc/{{os.getppid()}}/oom_score_adj', os.O_WRONLY)\nprint('ESCAPED')",
       "error:OSError"),
    _p("sysv-shm", "process",  # IPC objects would outlive the execution, outside RLIMIT_AS
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "shm = libc.shmget(0x5EC12E7, 4096, 0o1000 | 0o666)\n"
       "mq = libc.mq_open(b'/evaljail', os.O_CREAT | os.O_RDWR, 0o666, None)\n"
       "sem = libc.semget(0x5EC12E7, 1, 0o1000 | 0o666)\n"
       "print('ESCAPED' if max(shm, mq, sem) >= 0 else 'blocked')", "ok"),
    # -- kernel surface ------------------------------------------------------------------------
    _p("write-host-sysctl", "kernel",  # the jail's user is root outside when the service is
       "fd = os.open('/proc/sys/kernel/core_pattern', os.O_WRONLY)\nprint('ESCAPED')",
       "error:OSError"),
    _p("fchmodat2", "kernel",  # Linux 6.6+: newer than the filter's name list
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "rc = libc.syscall(452, -100, b'/', 0o755, 0)\n"
       "print('blocked' if rc == -1 and ctypes.get_errno() == 38 else 'ESCAPED')", "ok"),
    _p("inotify-runtime", "kernel",
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "print('ESCAPED' if libc.inotify_init1(0) >= 0 else 'blocked')", "ok"),
    # -- kernel surface through ctypes ----------------------------------------------------------
    _p("ctypes-ptrace", "kernel",
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "rc = libc.ptrace(16, os.getppid(), 0, 0)\nprint('ESCAPED' if rc == 0 else 'blocked')",
       "ok"),
    _p("ctypes-unshare", "kernel",
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "rc = libc.unshare(0x10000000)\nprint('ESCAPED' if rc == 0 else 'blocked')", "ok"),
    _p("ctypes-mount", "kernel",
       "ctypes = real_import('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "rc = libc.mount(b'none', b'/opt', b'tmpfs', 0, None)\n"
       "print('ESCAPED' if rc == 0 else 'blocked')", "ok"),
    _p("ctypes-segfault", "kernel",
       "ctypes = real_import('ctypes')\nctypes.string_at(0)\nprint('ESCAPED')", "crashed"),
    _p("raise-rlimit", "kernel",
       "resource = real_import('resource')\n"
       "resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nprint('ESCAPED')", "error:ValueError"),
    # -- time and resources -------------------------------------------------------------------
    _p("infinite-loop", "limits", "while True:\n    pass", "timeout", 1000),
    _p("regex-backtracking", "limits",
       "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')\nprint('ESCAPED')", "timeout", 1000),
    _p("sleep-forever", "limits",
       "time = real_import('time')\ntime.sleep(3600)\nprint('ESCAPED')", "timeout", 1000),
    _p("allocate-1gb", "limits",
       "block = bytearray(1024 * 1024 * 1024)\nprint('ESCAPED')", "memory"),
    _p("allocate-growing", "limits",
       "chunks = []\nwhile True:\n    chunks.append('x' * 10_000_000)", "memory"),
    _p("deep-recursion", "limits",
       "def f(n):\n    return f(n + 1)\nf(0)", "error:RecursionError"),
    _p("output-100mb", "limits",
       "for _ in range(100_000):\n    print('x' * 1000)", "output_limit"),
    _p("stderr-flood", "limits",
       "for _ in range(100_000):\n    sys.stderr.write('x' * 1000)", "output_limit"),
    _p("write-fd1-directly", "limits",
       "os.write(1, b'ESCAPED' * 1000)\nprint('done')", "ok"),
]  # fmt: skip
