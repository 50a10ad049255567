"""exemplar's Python sandbox driver: a persistent REPL, one per sample, like a notebook kernel.

Started by src/solve/sandbox.rs as `python -I -B -c <this file>` inside the working directory,
after the Rust side has set the resource limits and namespaces. Protocol on the original
stdin/stdout: every message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON. The driver first sends a hello (versions, what is importable, the network interfaces it
sees), then answers each {"code": ..., "max_chars": N} with
{"output": ..., "value": ..., "error": ..., "seconds": ...}.

User code never sees the protocol pipes: fd 0 becomes /dev/null and fds 1 and 2 a capture file in
the working directory, so print(), C extensions and subprocesses all land in the captured output.
"""

import ast
import io
import json
import linecache
import os
import resource
import socket
import struct
import sys
import time
import traceback

PROTO_IN = os.dup(0)  # os.dup gives non-inheritable fds: subprocesses do not get them
PROTO_OUT = os.dup(1)
DRIVER_PID = os.getpid()

_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
CAPTURE = os.open("capture.out", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(CAPTURE, 1)
os.dup2(CAPTURE, 2)
sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(PROTO_IN, n - len(buf))
        if not chunk:
            sys.exit(0)  # the solver hung up
        buf += chunk
    return buf


def receive():
    (n,) = struct.unpack(">I", read_exact(4))
    return json.loads(read_exact(n).decode("utf-8"))


def send(obj):
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(PROTO_OUT, data):]


class Capped(io.TextIOBase):
    """A text stream that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(room, len(s))
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self):
        return "".join(self.parts)


def fd_output(limit):
    """What subprocesses and C code wrote to fds 1 and 2 during the call; then empty the file."""
    size = os.fstat(CAPTURE).st_size
    os.lseek(CAPTURE, 0, os.SEEK_SET)
    data = os.read(CAPTURE, limit * 4 + 4)
    os.ftruncate(CAPTURE, 0)
    os.lseek(CAPTURE, 0, os.SEEK_SET)
    text = data.decode("utf-8", "replace")[:limit]
    return text, max(0, size - len(text.encode("utf-8", "replace")))


def optional(name):
    try:
        module = __import__(name)
        return getattr(module, "__version__", "?")
    except Exception:  # absent or broken: reported, never fatal
        return None


def hello():
    try:
        interfaces = [name for _, name in socket.if_nameindex()]
    except OSError:
        interfaces = None
    limits = {}
    for name in ["RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_FSIZE"]:
        soft, _ = resource.getrlimit(getattr(resource, name))
        limits[name] = None if soft == resource.RLIM_INFINITY else soft
    return {
        "hello": True,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "numpy": optional("numpy"),
        "sympy": optional("sympy"),
        "interfaces": interfaces,
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "limits": limits,
    }


NAMESPACE = {"__name__": "__main__", "__builtins__": __builtins__}
CELLS = [0]


def user_traceback(exc):
    """The traceback from the first frame of the user's cell on (driver frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    text = "".join(lines)
    if len(text) > 4000:  # a deep recursion: keep the head and the message
        text = text[:1500] + "\n...\n" + text[-1500:]
    return text.rstrip()


def execute(code, limit):
    CELLS[0] += 1
    name = "<cell-%d>" % CELLS[0]
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    out = Capped(limit)
    value = error = None
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    try:
        tree = ast.parse(code, name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), NAMESPACE)
        if last is not None:
            result = eval(compile(last, name, "eval"), NAMESPACE)
            if result is not None:
                value = repr(result)[:limit]
    except SystemExit as e:
        error = "SystemExit: %s" % (e.code,)
    except BaseException as e:  # noqa: B902 - everything the cell raises is its output
        if isinstance(e, SyntaxError):
            error = "".join(traceback.format_exception_only(type(e), e)).rstrip()
        else:
            error = user_traceback(e)
    finally:
        if os.getpid() != DRIVER_PID:
            os._exit(0)  # a fork of the user's code must never reach the protocol
        sys.stdout, sys.stderr = old
    fd_text, fd_dropped = fd_output(limit)
    text = out.text() + fd_text
    return {"output": text, "value": value, "error": error, "dropped": out.dropped + fd_dropped}


def main():
    for name in ["numpy", "sympy"]:  # import once here so the first cell is fast
        optional(name)
    send(hello())
    while True:
        request = receive()
        start = time.monotonic()
        reply = execute(request.get("code", ""), int(request.get("max_chars", 2000)))
        reply["seconds"] = round(time.monotonic() - start, 4)
        send(reply)


main()
