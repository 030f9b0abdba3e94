"""Top-level URLs: the board, the admin, accounts, the chat endpoints and GitHub's webhook."""

from django.contrib import admin
from django.urls import include, path

from . import ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("metrics/prometheus", ops.prometheus, name="prometheus"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("chatops/", include("chatops_app.urls")),
    path("integrations/", include("integrations_app.urls")),
    path("workers/", include("workers_app.urls")),
    path("", include("tasks_app.urls")),
]
