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
