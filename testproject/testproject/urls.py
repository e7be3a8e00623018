from django.urls import path

from demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("hello", views.hello, name="hello"),
    path("json", views.json_view, name="json"),
    path("db", views.db_view, name="db"),
    path("form", views.form_view, name="form"),
    path("slow", views.slow, name="slow"),
    path("file", views.big_file, name="file"),
    path("upload", views.upload, name="upload"),
]
