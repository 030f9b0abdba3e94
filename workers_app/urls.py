"""The worker pool."""

from django.urls import path

from . import views

app_name = "workers_app"
urlpatterns = [
    path("", views.pool, name="pool"),
    path("<str:worker_id>/<slug:action>/", views.worker_action, name="worker_action"),
]
