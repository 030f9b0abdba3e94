"""Board and task pages (filled in by the dashboard)."""

urlpatterns: list = []
