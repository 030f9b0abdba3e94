"""The worker pool."""

from django.urls import path

from . import views

app_name = "workers_app"
urlpatterns = [
    path("", views.pool, name="pool"),
    # `path`: an id with a "/" (runworker did not always refuse one) still has working buttons,
    # and its row does not stop the pool page rendering; the action is always the last segment.
    path("<path:worker_id>/<slug:action>/", views.worker_action, name="worker_action"),
]
