import os
import sys
import time

from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def slow(request):
    print("slow request started", file=sys.stderr, flush=True)
    time.sleep(float(request.GET.get("s", "1")))
    return HttpResponse(f"slept in {os.getpid()}", content_type="text/plain")


@csrf_exempt
def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


def environ(request):
    return JsonResponse({k: v for k, v in request.META.items() if isinstance(v, (str, int, bool))})


def csleep(request):
    """Stuck in C code: like a C extension looping without returning to Python.

    libc's sleep() alone would return early on SIGABRT and let the Python
    handler run; with SIGABRT blocked, the signal waits as it would behind a
    C loop that never checks for signals.
    """
    import ctypes
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    ctypes.CDLL(None).sleep(int(request.GET.get("s", "30")))
    return HttpResponse("woke up")


def shared(request):
    """This worker's memory as /proc sees it: what it shares with its siblings."""
    with open("/proc/self/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith("0"))
    kib = {k.strip(): int(v.split()[0]) for k, v in fields.items() if v.strip().endswith("kB")}
    return JsonResponse(kib)


def secure(request):
    return JsonResponse({"is_secure": request.is_secure(), "host": request.get_host()})


@csrf_exempt
def count(request):
    total = 0
    while chunk := request.read(65536):
        total += len(chunk)
    return JsonResponse({"received": total})


def die(request):
    """A worker dying by its own hand: os._exit (code 3 included) or a segfault."""
    how = request.GET["how"]
    if how == "segv":
        import ctypes

        ctypes.string_at(0)
    os._exit(int(how))


def loaded_by(request):
    """Which process loaded the WSGI app (the arbiter, when preloaded), and which one answers."""
    from . import wsgi

    return JsonResponse({"loaded_by": wsgi.LOADED_BY, "pid": os.getpid()})


def debug(request):
    """A developer's breakpoint: pdb reads the commands from the server's terminal."""
    answer = "before the breakpoint"
    print(f"breakpoint in pid {os.getpid()}", file=sys.stderr, flush=True)
    breakpoint()
    answer = "after the breakpoint"
    return HttpResponse(answer, content_type="text/plain")


def stream_then_sleep(request):
    """The head and a first chunk go out, then the view hangs: too late for a 500."""
    from django.http import StreamingHttpResponse

    def chunks():
        yield b"first chunk\n"
        time.sleep(float(request.GET.get("s", "30")))
        yield b"never\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


@csrf_exempt
def upload_then_sleep(request):
    """Django spools an upload past FILE_UPLOAD_MAX_MEMORY_SIZE to a named file, then the view hangs."""
    names = [f.temporary_file_path() for f in request.FILES.values() if hasattr(f, "temporary_file_path")]
    print("upload spooled to", *names, file=sys.stderr, flush=True)
    time.sleep(float(request.GET.get("s", "30")))
    return HttpResponse("never")
