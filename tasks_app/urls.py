"""Board and task pages."""

app_name = "tasks_app"
urlpatterns: list = []
