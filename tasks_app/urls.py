"""Board and task pages."""

from django.urls import path

from . import board_forms, history_views, views

app_name = "tasks_app"
urlpatterns = [
    path("", views.board_page, name="board"),
    path("metrics/", views.metrics_page, name="metrics"),
    path("throughput/", views.throughput_page, name="throughput"),
    path("tasks/new/", board_forms.submit_task, name="submit"),
    path("tasks/<int:pk>/", views.task_detail, name="task_detail"),
    path("tasks/<int:pk>/runs/<int:run_id>/events/", views.run_events, name="run_events"),
    path("tasks/<int:pk>/<slug:action>/", views.task_action, name="task_action"),
    path("dead-letter/retry/", board_forms.retry_all, name="retry_all"),
    path("history/", history_views.history_page, name="history"),
]
