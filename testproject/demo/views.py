import os
import tempfile
import time

from django.http import FileResponse, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt

from .models import Note


def index(request):
    return render(request, "demo/index.html", {"pid": os.getpid()})


def hello(request):
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def json_view(request):
    return JsonResponse({"pid": os.getpid(), "path": request.path, "query": request.GET.dict()})


def db_view(request):
    notes = list(Note.objects.values_list("text", flat=True)[:10])
    return JsonResponse({"count": Note.objects.count(), "latest": notes})


def form_view(request):
    if request.method == "POST":
        Note.objects.create(text=request.POST.get("text", "")[:200] or "(empty)")
        return redirect("form")
    return render(request, "demo/form.html", {"notes": Note.objects.all()[:20]})


def slow(request):
    seconds = min(float(request.GET.get("seconds", "2")), 120)
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds} s in pid {os.getpid()}\n", content_type="text/plain")


_FILE = os.path.join(tempfile.gettempdir(), "django-prefork-demo-1MiB.bin")


def big_file(request):
    """A 1 MiB FileResponse: the server sends it with os.sendfile."""
    if not os.path.exists(_FILE):
        with open(_FILE + ".tmp", "wb") as f:
            f.write(os.urandom(1 << 20))
        os.replace(_FILE + ".tmp", _FILE)
    return FileResponse(open(_FILE, "rb"), content_type="application/octet-stream")


@csrf_exempt
def upload(request):
    """Counts the bytes of a POST body (for the benchmarks' 100 KB POST)."""
    return JsonResponse({"received": len(request.body)})
