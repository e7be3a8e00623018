from django.urls import path

from . import views

urlpatterns = [
    path("pid", views.pid),
    path("slow", views.slow),
    path("echo", views.echo),
    path("environ", views.environ),
    path("csleep", views.csleep),
    path("shared", views.shared),
    path("secure", views.secure),
    path("count", views.count),
    path("die", views.die),
    path("loaded_by", views.loaded_by),
    path("debug", views.debug),
    path("stream_then_sleep", views.stream_then_sleep),
    path("upload_then_sleep", views.upload_then_sleep),
]
